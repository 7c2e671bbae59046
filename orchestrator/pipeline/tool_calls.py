"""Tools in the pipeline: who is shown the caller's tools, and what happens when an expert calls one.

A request's ``tools``, ``tool_choice`` and ``response_format`` reach every recruited expert; only experts on a
tool-capable backend (``ExpertSpec.supports``: ``litellm``) or engine (vLLM's: ``experts/vllm/tools.py``) pass
tools to their model, the others answer in text;
``response_format`` is followed by ``litellm`` experts and enforced by ``local`` ones. When a recruited expert
answers with tool calls, there is nothing to vote on or synthesise: the best-ranked such expert's calls go back
to the caller as the answer (``finish_reason: tool_calls``), and the caller runs the tools and asks again with
their results, as with any OpenAI model.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aggregator import Verdict
from orchestrator.pipeline.state import ExpertAnswer

TOOL_CALLS_STRATEGY = "tool_calls"


def tool_caller(usable: list[ExpertAnswer]) -> ExpertAnswer | None:
    """The best-ranked answer that asks for tools (``usable`` is in the decision's order), if any."""
    return next((answer for answer in usable if answer.tool_calls), None)


def tool_call_verdict(answer: ExpertAnswer) -> Verdict:
    """The answer's tool calls, returned to the caller as they are."""
    return Verdict(
        text=answer.text,
        finish_reason="tool_calls",
        strategy=TOOL_CALLS_STRATEGY,
        expert=answer.expert,
        tool_calls=answer.tool_calls,
        note=f"expert {answer.expert!r} asked to call tools; its calls are returned without aggregation",
    )


def with_passthrough(
    metadata: dict[str, Any], honours: Callable[[str, str], bool], experts: list[str], passed: dict[str, Any]
) -> dict[str, Any]:
    """``metadata`` plus ``passthrough``: which of ``experts`` were shown the request's tools / response_format.

    ``passed`` is the request's ``tools``, ``tool_choice`` and ``response_format`` (None when absent);
    without any of them ``metadata`` is returned as it is. ``honours(expert, field)`` says who acts on a field
    (``ExpertClient.honours``); experts that cannot are listed, so a caller sees that an answer came from a model
    that never saw its tools.
    """
    fields = [name for name, value in passed.items() if value is not None]
    if not fields:
        return metadata
    report = {
        "fields": fields,
        "sent_to": [name for name in experts if all(honours(name, f) for f in fields)],
        "not_supported_by": [name for name in experts if not all(honours(name, f) for f in fields)],
    }
    return {**metadata, "passthrough": report}
