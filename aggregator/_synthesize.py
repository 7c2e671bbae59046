"""The model-facing side of aggregation: what the synthesising aggregator and the judge read.

Candidates reach them without their reasoning traces (``<think>...</think>``) and clipped,
so k long answers fit a small aggregator's context window; the judge's reply is parsed
back into a candidate number.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace

from aggregator._extract import strip_reasoning
from aggregator._prompts import (
    CANDIDATE,
    JSON_OUTPUT,
    JSON_SCHEMA_OUTPUT,
    RANK_SYSTEM,
    RANK_USER,
    SYNTHESIS_SYSTEM,
    SYNTHESIS_USER,
)
from experts.types import GenerationRequest, Message

MAX_CANDIDATE_CHARS = 4000
# "Best: 2", "best candidate is #3": each run of spaces belongs to the word before it, so the pattern stays linear
# on a judge's reply (four adjacent optional runs of spaces took seconds on a few hundred spaces)
_BEST = re.compile(
    r"best\s*(?:(?:candidate|answer)\s*)?(?:(?:is|:)\s*)?(?:(?:candidate|answer)\s*)?#?(\d+)", re.IGNORECASE
)
_NUMBER = re.compile(r"\b(\d+)\b")


@dataclass(frozen=True)
class Candidate:
    """One expert's answer, with the router's estimate that this expert answers the query correctly."""

    expert: str
    text: str
    competence: float = 0.5
    finish_reason: str = "stop"


@dataclass(frozen=True)
class Sampling:
    """The aggregator's own budget and sampling: separate from what the experts were given."""

    max_tokens: int | None = None
    temperature: float | None = None
    seed: int | None = None


def synthesis_request(
    conversation: list[Message], candidates: list[Candidate], sampling: Sampling
) -> GenerationRequest:
    """The aggregator's request: the question, the numbered candidates (traces stripped), our instructions."""
    user = SYNTHESIS_USER.format(question=render_question(conversation), candidates=_numbered(candidates))
    return _request(SYNTHESIS_SYSTEM, user, sampling)


def for_caller(request: GenerationRequest, caller: GenerationRequest) -> GenerationRequest:
    """The synthesiser's request, made to follow the caller's ``stop`` and ``response_format``.

    The synthesiser writes the answer the caller receives, so it ends where the caller's stop strings say and,
    when the caller asked for JSON, is told so and passed the format (enforced by ``local`` experts' grammar,
    by the provider for ``litellm`` ones). The judge of the ``rank`` strategy only names a candidate: not this.
    """
    form = caller.response_format or {}
    system, *rest = request.messages
    if form.get("type") == "json_object":
        system = Message("system", system.content + JSON_OUTPUT)
    elif form.get("type") == "json_schema":
        schema = json.dumps((form.get("json_schema") or {}).get("schema", {}), sort_keys=True)
        system = Message("system", system.content + JSON_SCHEMA_OUTPUT.format(schema=schema))
    return replace(request, messages=[system, *rest], stop=list(caller.stop), response_format=caller.response_format)


def rank_request(conversation: list[Message], candidates: list[Candidate], sampling: Sampling) -> GenerationRequest:
    """The judge's request: pick the best numbered candidate."""
    user = RANK_USER.format(question=render_question(conversation), candidates=_numbered(candidates))
    return _request(RANK_SYSTEM, user, sampling)


def parse_rank(reply: str, count: int) -> int | None:
    """The 0-based candidate the judge picked ('Best: 2' -> 1), or None when it named none in range."""
    reply = strip_reasoning(reply)
    for pattern in (_BEST, _NUMBER):
        for match in pattern.finditer(reply):
            number = int(match.group(1))
            if 1 <= number <= count:
                return number - 1
    return None


def render_question(conversation: list[Message]) -> str:
    """The last user turn, with earlier turns as context when the conversation has them."""
    turns = [message for message in conversation if message.role != "system"]
    if len(turns) <= 1:
        return turns[-1].content if turns else ""
    earlier = "\n".join(f"{message.role.capitalize()}: {message.content}" for message in turns[:-1])
    return f"(Conversation so far)\n{earlier}\n\n(Current question)\n{turns[-1].content}"


def _numbered(candidates: list[Candidate]) -> str:
    return "\n\n".join(
        CANDIDATE.format(number=number, text=_clip(strip_reasoning(candidate.text)))
        for number, candidate in enumerate(candidates, start=1)
    )


def _request(system: str, user: str, sampling: Sampling) -> GenerationRequest:
    return GenerationRequest(
        messages=[Message("system", system), Message("user", user)],
        max_tokens=sampling.max_tokens,
        temperature=sampling.temperature,
        seed=sampling.seed,
    )


def _clip(text: str) -> str:
    return text if len(text) <= MAX_CANDIDATE_CHARS else text[:MAX_CANDIDATE_CHARS] + " [...]"
