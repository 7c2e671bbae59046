"""``ChatMoesaic`` against LangChain's standard chat-model **integration** tests, on a live server.

The server is the session's API over the embedded pool (SmolLM2-135M as four experts and an aggregator), so what
runs is the whole stack: HTTP, routing, the experts in Ray actors, aggregation. Greedy decoding keeps the small
model's answers the same run to run. Off here: tool calling (local experts answer in text; a pool with litellm
experts calls tools), and the standard structured-output and JSON-mode tests, whose free-text fields (a joke's setup
and punchline) a 135M model does not finish within a sane max_tokens, so the answers would be cut JSON; our own
structured-output tests (tests/test_structured_output.py) check the format with a schema it can fill.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
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
        return {"model": "moesaic", "temperature": 0, "max_tokens": 48}

    @property
    def has_tool_calling(self) -> bool:
        return False  # local experts answer in text; a pool with litellm experts calls tools

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
