"""The pipeline's aggregation keeps the event loop running while it reads very large expert answers (issue 27).

No Ray and no model: the graph's nodes are called directly, with answers already in the state and, for the
synthesising aggregator, a stand-in pool that answers at once.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from aggregator._strategies import AggregationSettings, Aggregator
from experts.types import Completion, GenerationRequest, Message, Usage
from orchestrator.pipeline import nodes as pipeline_nodes
from orchestrator.pipeline.nodes import PipelineNodes
from orchestrator.pipeline.offload import OFFLOAD_CHARS
from orchestrator.pipeline.state import ExpertAnswer, PipelineRequest
from router._decision import Escalation, RoutingDecision

QUESTION = "Which is a mammal?\n(A) shark\n(B) trout\n(C) whale"
EXPERTS = ["a", "b", "c"]
SLOW_S = 0.3  # the stand-in for heavy extraction: sleeps, so only a blocked loop would stop ticking


class _Heartbeat:
    """Ticks every few ms on the event loop; ``ticks`` and ``longest_gap_s`` say whether the loop kept running."""

    def __init__(self, every_s: float = 0.005) -> None:
        self.every_s, self.ticks, self.longest_gap_s = every_s, 0, 0.0
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> _Heartbeat:
        self._task = asyncio.create_task(self._beat())
        await asyncio.sleep(0)  # let it take its first tick time
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._task is not None
        self._task.cancel()

    async def _beat(self) -> None:
        last = time.perf_counter()
        while True:
            await asyncio.sleep(self.every_s)
            now = time.perf_counter()
            self.ticks, self.longest_gap_s = self.ticks + 1, max(self.longest_gap_s, now - last)
            last = now


class _InstantPool:
    """The synthesising aggregator's pool: replies at once with ``reply``."""

    def __init__(self, reply: str) -> None:
        self.reply = reply

    async def generate(self, name: str, request: GenerationRequest) -> Completion:
        return Completion(self.reply, "stop", Usage(1, 1), name)


def nodes(strategy: str, reply: str = "") -> PipelineNodes:
    aggregator = Aggregator(AggregationSettings(strategy=strategy, consensus=None), "conductor")  # type: ignore[arg-type]
    return PipelineNodes(_InstantPool(reply), None, aggregator)  # type: ignore[arg-type]  # the router is not asked


def state(texts: list[str], strategy: str, escalation: Escalation | None = None) -> dict[str, Any]:
    request = PipelineRequest(GenerationRequest([Message("user", QUESTION)]), strategy=strategy, consensus=None)
    decision = RoutingDecision(k=len(texts), experts=EXPERTS[: len(texts)], escalation=escalation)
    answers = [ExpertAnswer(name, text, "stop") for name, text in zip(EXPERTS, texts)]
    return {"request": request, "decision": decision, "answers": answers, "replacements": []}


def large(letter: str) -> str:
    """An answer far above the offload threshold, with pathological runs for the old patterns, then its letter."""
    return "answer" + " " * 2_000 + "x\n" + "<think>" * 20_000 + "\n " * OFFLOAD_CHARS + f"The answer is ({letter})."


def slow_and_recorded(work: Callable[..., Any], threads: list[int]) -> Callable[..., Any]:
    """``work``, noting the thread it runs in and first taking ``SLOW_S`` (heavy extraction, without the CPU)."""

    def run(*args: Any, **kwargs: Any) -> Any:
        threads.append(threading.get_ident())
        time.sleep(SLOW_S)
        return work(*args, **kwargs)

    return run


async def test_a_vote_over_large_answers_runs_off_the_loop_which_keeps_ticking(monkeypatch: pytest.MonkeyPatch) -> None:
    pipeline = nodes("vote")
    threads: list[int] = []
    monkeypatch.setattr(pipeline.aggregator, "count_votes", slow_and_recorded(pipeline.aggregator.count_votes, threads))
    async with _Heartbeat() as heartbeat:
        result = await pipeline.aggregate(state([large("C"), large("C"), large("A")], "vote"))  # type: ignore[arg-type]
    assert result["final"].answer == "C" and result["final"].strategy == "vote"
    assert threads and threads[0] != threading.get_ident()  # a worker thread counted the votes
    assert heartbeat.ticks >= 10 and heartbeat.longest_gap_s < SLOW_S  # the loop ran all along


async def test_small_answers_are_aggregated_in_place(monkeypatch: pytest.MonkeyPatch) -> None:
    pipeline = nodes("vote")
    threads: list[int] = []
    monkeypatch.setattr(pipeline.aggregator, "count_votes", slow_and_recorded(pipeline.aggregator.count_votes, threads))
    result = await pipeline.aggregate(state(["(C)", "(C)", "(A)"], "vote"))  # type: ignore[arg-type]
    assert result["final"].answer == "C"
    assert threads == [threading.get_ident()]  # no hop to a thread: the fast path of small requests


async def test_the_synthesisers_large_reply_is_read_off_the_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    threads: list[int] = []
    monkeypatch.setattr(pipeline_nodes, "step_verdict", slow_and_recorded(pipeline_nodes.step_verdict, threads))
    pipeline = nodes("synthesize", reply=large("C"))
    async with _Heartbeat() as heartbeat:
        result = await pipeline.aggregate(state(["(C)", "(A)"], "synthesize"))  # type: ignore[arg-type]
    verdict = result["final"]
    assert verdict.strategy == "synthesize" and verdict.expert is None and verdict.answer == "C"
    assert threads and threads[0] != threading.get_ident()
    assert heartbeat.ticks >= 10 and heartbeat.longest_gap_s < SLOW_S


async def test_an_escalations_review_of_large_answers_runs_off_the_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    pipeline = nodes("vote")
    threads: list[int] = []
    monkeypatch.setattr(pipeline.aggregator, "count_votes", slow_and_recorded(pipeline.aggregator.count_votes, threads))
    first_stage = state([large("C"), large("B")], "vote", Escalation(then=["c"]))
    async with _Heartbeat() as heartbeat:
        reviewed = await pipeline.review(first_stage)  # type: ignore[arg-type]
    escalation = reviewed["decision"].escalation
    assert escalation.escalated is True and "did not agree" in escalation.reason
    assert threads and threads[0] != threading.get_ident()
    assert heartbeat.ticks >= 10 and heartbeat.longest_gap_s < SLOW_S


async def test_pathological_answers_through_the_real_extraction_never_stall_the_loop() -> None:
    """No stand-in: the real patterns on answers the replaced ones would have read for minutes."""
    pipeline = nodes("vote")
    started = time.perf_counter()
    async with _Heartbeat() as heartbeat:
        result = await pipeline.aggregate(state([large("C"), large("C"), large("A")], "vote"))  # type: ignore[arg-type]
    assert result["final"].answer == "C" and result["final"].answer_kind == "choice"
    assert time.perf_counter() - started < 2.0 and heartbeat.longest_gap_s < 0.5
