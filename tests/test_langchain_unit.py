"""``ChatMoesaic`` against LangChain's standard chat-model unit tests (``langchain-tests``), plus our own settings.

The standard suite checks construction from parameters and the environment, ``bind_tools``,
``with_structured_output``, the tracing parameters and serialisation (snapshot in
``tests/__snapshots__/``); no server is involved. The live behaviour is in test_langchain_live.py.
"""

from __future__ import annotations

from typing import Any

from langchain_core.messages import HumanMessage
from langchain_moesaic import ChatMoesaic
from langchain_tests.unit_tests import ChatModelUnitTests


class TestChatMoesaicStandard(ChatModelUnitTests):
    @property
    def chat_model_class(self) -> type[ChatMoesaic]:
        return ChatMoesaic

    @property
    def chat_model_params(self) -> dict[str, Any]:
        return {"model": "moesaic", "base_url": "http://127.0.0.1:8000/v1"}

    @property
    def init_from_env_params(self) -> tuple[dict[str, str], dict[str, Any], dict[str, Any]]:
        return (
            {"MOESAIC_API_KEY": "key-from-env", "MOESAIC_BASE_URL": "http://10.0.0.7:8000/v1"},
            {},
            {"openai_api_key": "key-from-env", "openai_api_base": "http://10.0.0.7:8000/v1", "model_name": "moesaic"},
        )


def test_routing_settings_become_the_moesaic_object() -> None:
    model = ChatMoesaic(k=2, strategy="vote", extra_body={"moesaic": {"consensus": 0.5}, "user": "u1"})
    payload = model._get_request_payload([HumanMessage("hi")])
    assert payload["extra_body"] == {"moesaic": {"k": 2, "strategy": "vote", "consensus": 0.5}, "user": "u1"}
    assert payload["model"] == "moesaic"
    assert "moesaic" not in ChatMoesaic()._get_request_payload([HumanMessage("hi")]).get("extra_body", {})


def test_tracing_names_moesaic_and_the_route() -> None:
    params = ChatMoesaic(model="expert/math", temperature=0.0, max_tokens=16)._get_ls_params()
    assert params["ls_provider"] == "moesaic"
    assert params["ls_model_name"] == "expert/math"
    assert params["ls_max_tokens"] == 16


def test_defaults_point_at_a_local_server_without_a_key(monkeypatch: Any) -> None:
    monkeypatch.delenv("MOESAIC_API_KEY", raising=False)
    monkeypatch.delenv("MOESAIC_BASE_URL", raising=False)
    model = ChatMoesaic()
    assert model.openai_api_base == "http://127.0.0.1:8000/v1"
    assert model.openai_api_key is not None and model.openai_api_key.get_secret_value() == "no-key"
    assert model.stream_usage is True
    assert model.use_responses_api is False
