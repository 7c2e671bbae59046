"""The aggregation strategies behind one interface: ``Aggregator.plan``.

``plan`` looks at the experts' answers and either decides at once (``Verdict``: one
expert, a vote, or the consensus short-cut) or asks for one more model call
(``ModelStep``: the synthesising aggregator or the ranking judge), whose reply
``ModelStep.finish`` turns into the ``Verdict``. The orchestrator makes the call, so this
module stays free of Ray and I/O and is tested directly.

- ``passthrough``: the best-ranked expert's answer.
- ``vote``: extract each final answer, weight each by the router's competence estimate,
  return the winning answer with its most competent supporter's text.
- ``synthesize``: an aggregator model reads the candidates and writes the answer.
- ``rank``: a judge model names the best candidate, whose text is returned.
Before ``synthesize`` and ``rank``, the consensus short-cut returns the agreed answer
without a model call when at least ``consensus`` of the answers agree.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from aggregator._extract import EXTRACTORS, infer_answer_kind
from aggregator._synthesize import Candidate, Sampling, parse_rank, rank_request, render_question, synthesis_request
from aggregator._vote import VoteOutcome, weighted_vote
from experts.types import GenerationRequest, Message, ToolCall

StrategyName = Literal["passthrough", "vote", "synthesize", "rank"]
STRATEGIES: tuple[str, ...] = ("passthrough", "vote", "synthesize", "rank")


@dataclass(frozen=True)
class AggregationSettings:
    """Pool defaults (``aggregation:`` in the pool file); a request may override each one."""

    strategy: StrategyName = "synthesize"
    consensus: float | None = 1.0  # share of answers that must agree for the short-cut; None: never
    answer_kind: str = "auto"  # an extractor name, or auto (inferred per query)
    sampling: Sampling = Sampling()


@dataclass(frozen=True)
class Verdict:
    """The final answer and how it was reached."""

    text: str
    finish_reason: str
    strategy: str
    expert: str | None  # whose text it is (None when the aggregator wrote it)
    shortcut: bool = False
    answer: str | None = None  # the extracted answer, when one was
    answer_kind: str | None = None
    votes: dict[str, float] = field(default_factory=dict)
    agreement: float | None = None
    note: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()  # an expert asked for tools: they go back to the caller as they are


@dataclass(frozen=True)
class ModelStep:
    """One more model call: ``expert`` answers ``request`` as ``role``; ``finish`` reads its reply.

    ``stream_reply`` says whether the reply itself is the answer (synthesis: its tokens may
    stream to the client) or only a choice among candidates (the judge's 'Best: N').
    """

    role: Literal["aggregator", "judge"]
    expert: str
    request: GenerationRequest
    stream_reply: bool
    finish: Callable[[str, str], Verdict]
    fallback: Verdict  # used when the call fails: the experts did answer, so the request need not


class Aggregator:
    """Turns candidates into a ``Verdict`` directly or through one ``ModelStep``."""

    def __init__(self, settings: AggregationSettings, aggregator: str | None, judge: str | None = None) -> None:
        self.settings = settings
        self.aggregator = aggregator
        self.judge = judge or aggregator

    def plan(
        self,
        conversation: list[Message],
        candidates: list[Candidate],
        strategy: str | None = None,
        consensus: float | None | Literal["pool"] = "pool",
        aggregator: str | None = None,
    ) -> Verdict | ModelStep:
        """Decide how ``candidates`` (best-ranked first) become one answer.

        ``aggregator`` overrides the pool's (the one measured best for the query's category).
        """
        if not candidates:
            raise ValueError("aggregation needs at least one candidate answer")
        strategy = strategy or self.settings.strategy
        if strategy not in STRATEGIES:
            raise ValueError(f"unknown aggregation strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
        threshold = self.settings.consensus if consensus == "pool" else consensus
        if len(candidates) == 1 or strategy == "passthrough":
            return _passthrough(candidates[0])
        kind, outcome = self.count_votes(conversation, candidates)
        if strategy == "vote":
            return _voted(candidates, kind, outcome, "vote", shortcut=False)
        if threshold is not None and outcome.answer is not None and outcome.agreement >= threshold - 1e-9:
            return _voted(candidates, kind, outcome, strategy, shortcut=True)
        fallback = _voted(candidates, kind, outcome, strategy, shortcut=False)
        if strategy == "synthesize":
            writer = aggregator or self.aggregator
            if writer is None:
                return _with_note(fallback, "no aggregator in the pool: the vote decided")
            request = synthesis_request(conversation, candidates, self.settings.sampling)
            return ModelStep("aggregator", writer, request, True, _synthesised(kind, outcome), fallback)
        judge = self.judge if aggregator is None else aggregator
        if judge is None:
            return _with_note(fallback, "no judge in the pool: the vote decided")
        request = rank_request(conversation, candidates, self.settings.sampling)
        return ModelStep("judge", judge, request, False, _ranked(candidates, kind, outcome), fallback)

    def count_votes(self, conversation: list[Message], candidates: list[Candidate]) -> tuple[str, VoteOutcome]:
        """The answer kind used and the competence-weighted vote over the candidates' extracted answers."""
        kind = self.settings.answer_kind
        if kind == "auto":
            kind = infer_answer_kind(render_question(conversation), [c.text for c in candidates])
        extractor = EXTRACTORS.get(kind)
        if extractor is None:
            raise ValueError(f"no answer extractor named {kind!r}; known: {', '.join(EXTRACTORS)}, auto")
        answers = [extractor(candidate.text) for candidate in candidates]
        return kind, weighted_vote(answers, [candidate.competence for candidate in candidates])


def _passthrough(candidate: Candidate) -> Verdict:
    return Verdict(candidate.text, candidate.finish_reason, "passthrough", candidate.expert)


def _voted(candidates: list[Candidate], kind: str, outcome: VoteOutcome, strategy: str, shortcut: bool) -> Verdict:
    chosen = candidates[outcome.winner]
    return Verdict(
        chosen.text,
        chosen.finish_reason,
        strategy,
        chosen.expert,
        shortcut=shortcut,
        answer=outcome.answer,
        answer_kind=kind,
        votes={answer: round(total, 4) for answer, total in outcome.totals.items()},
        agreement=round(outcome.agreement, 4),
    )


def _with_note(verdict: Verdict, note: str) -> Verdict:
    return Verdict(**{**verdict.__dict__, "note": note})


def _synthesised(kind: str, outcome: VoteOutcome) -> Callable[[str, str], Verdict]:
    def finish(reply: str, finish_reason: str) -> Verdict:
        extractor = EXTRACTORS[kind]
        return Verdict(
            reply,
            finish_reason,
            "synthesize",
            None,
            answer=extractor(reply),
            answer_kind=kind,
            votes={answer: round(total, 4) for answer, total in outcome.totals.items()},
            agreement=round(outcome.agreement, 4),
        )

    return finish


def _ranked(candidates: list[Candidate], kind: str, outcome: VoteOutcome) -> Callable[[str, str], Verdict]:
    def finish(reply: str, finish_reason: str) -> Verdict:
        picked = parse_rank(reply, len(candidates))
        if picked is None:  # the judge named no candidate: the vote decides, and says so
            verdict = _voted(candidates, kind, outcome, "rank", shortcut=False)
            return _with_note(verdict, f"the judge named no candidate ({reply.strip()[:80]!r}): the vote decided")
        chosen = candidates[picked]
        return Verdict(
            chosen.text,
            chosen.finish_reason,
            "rank",
            chosen.expert,
            answer=EXTRACTORS[kind](chosen.text),
            answer_kind=kind,
            votes={answer: round(total, 4) for answer, total in outcome.totals.items()},
            agreement=round(outcome.agreement, 4),
        )

    return finish
