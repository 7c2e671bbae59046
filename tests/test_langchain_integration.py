"""``ChatMoesaic`` against LangChain's standard chat-model **integration** tests, on a live server.

The server is the session's API over the embedded pool (SmolLM2-135M as four experts and an aggregator), so what
runs is the whole stack: HTTP, routing, the experts in Ray actors, aggregation. Greedy decoding keeps the small
model's answers the same run to run. The standard tool-calling tests are on (``tool_choice`` "any": the grammar
holds every expert's call to an offered function, and the pool votes over them); three are expected to fail on this
model for what it decides, not for the format: ``test_tool_calling`` (sync and async) wants ``magic_function`` called
with ``input: 3`` and SmolLM2-135M writes another number, and ``test_agent_loop`` binds its tool without forcing it
(``auto``), where SmolLM2 answers in text instead of calling (``tests/test_react_agent.py`` runs an agent loop that
forces each step's call). Off: the standard structured-output and JSON-mode tests, whose free-text fields (a joke's
setup and punchline) a 135M model does not finish within a sane max_tokens, so the answers would be cut JSON; our
own structured-output tests (tests/test_structured_output.py) check the format with a schema it can fill.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from langchain_core.language_models import BaseChatModel
from langchain_moesaic import ChatMoesaic
from langchain_tests.integration_tests import ChatModelIntegrationTests

from tests.conftest import ServerThread

pytestmark = [pytest.mark.ray, pytest.mark.model]


@pytest.fixture(scope="module", autouse=True)
def live_server(api_server: ServerThread) -> Iterator[None]:
    """``ChatMoesaic`` reads its server from ``MOESAIC_BASE_URL``: point it at the session's server."""
    patch = pytest.MonkeyPatch()
    patch.setenv("MOESAIC_BASE_URL", api_server.url + "/v1")
    yield
    patch.undo()


class TestChatMoesaicIntegration(ChatModelIntegrationTests):
    @property
    def chat_model_class(self) -> type[ChatMoesaic]:
        return ChatMoesaic

    @property
    def chat_model_params(self) -> dict[str, Any]:
        return {"model": "moesaic", "temperature": 0, "max_tokens": 96}

    @property
    def has_tool_calling(self) -> bool:
        return True

    @property
    def tool_choice_value(self) -> str | None:
        return "any"  # LangChain's "any": tool_choice "required", a call the grammar holds well-formed

    @pytest.mark.xfail(reason="SmolLM2-135M calls magic_function with another input than the 3 asked for")
    @pytest.mark.parametrize("model", [{}, {"output_version": "v1"}], indirect=True)
    def test_tool_calling(self, model: BaseChatModel) -> None:
        super().test_tool_calling(model)

    @pytest.mark.xfail(reason="SmolLM2-135M calls magic_function with another input than the 3 asked for")
    async def test_tool_calling_async(self, model: BaseChatModel) -> None:
        await super().test_tool_calling_async(model)

    @pytest.mark.xfail(reason="the tool is bound with tool_choice auto, and SmolLM2-135M answers in text instead")
    @pytest.mark.parametrize("model", [{}, {"output_version": "v1"}], indirect=True)
    def test_agent_loop(self, model: BaseChatModel) -> None:
        super().test_agent_loop(model)

    @property
    def has_structured_output(self) -> bool:
        return False  # see the module docstring: the standard schemas' free-text fields outrun a 135M model

    @property
    def supports_json_mode(self) -> bool:
        return False

    @property
    def returns_usage_metadata(self) -> bool:
        return True

    @property
    def supports_model_override(self) -> bool:
        return True

    @property
    def model_override_value(self) -> str:
        return "expert/math"  # one expert directly, instead of the routed pipeline
