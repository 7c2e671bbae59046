"""``moesaic batch``: many items at once, each expert loaded once (Symbolic-MoE's batch inference).

Answering items one by one would load and unload experts over and over when the pool holds
more local models than fit in memory. Instead: route every item first; invert item -> experts
into expert -> items by submitting every expert call at once to the ``Dispatcher``, which runs
each expert over all its items as one batch (loaded once, then evicted for the next); then
aggregate per item, the aggregator's calls grouped the same way (the aggregator is an expert
too); write exactly one output line per input line, in input order, errors included.

Every routing decision and finished call goes to the progress log beside the output
(``orchestrator/pipeline/batch_io.py``), so a stopped run continues where it stopped without repeating
calls. Routing uses the router's fast path: the keyword expert of the LLM path is not asked. An escalation
(``cost``/``escalate`` policies) takes a second round: every first stage is reviewed once its answers are in
(``orchestrator/pipeline/escalation.py``), then the second stages that are needed run, grouped by expert as well.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aggregator import ModelStep, Verdict
from experts.runtime import ExpertCallFailed, ExpertUnavailable
from experts.types import Completion, GenerationRequest
from orchestrator.pipeline.batch_io import InputLine, Progress, ProgressLog, read_items, write_output
from orchestrator.pipeline.escalation import review_first_stage
from orchestrator.pipeline.orchestrator import Orchestrator
from orchestrator.pipeline.steps import candidates, model_step_call, step_fallback, step_verdict
from router import NoExpertAvailable, RoutingDecision

Advance = Callable[[str, int], None]  # (stage: "experts" | "aggregation", calls finished)


@dataclass
class BatchReport:
    """How a run went: items, failures, calls made now and calls reused from the progress log."""

    items: int
    failed: int = 0
    calls_made: int = 0
    calls_reused: int = 0
    stopped: bool = False
    seconds: float = 0.0


@dataclass
class _Item:
    line: InputLine
    request: GenerationRequest | None = None
    decision: RoutingDecision | None = None
    error: str | None = None
    failures: dict[str, str] = field(default_factory=dict)  # expert -> why its call failed


class BatchRunner:
    """Runs one input file through an orchestrator whose pool is a ``Dispatcher``."""

    def __init__(
        self,
        orchestrator: Orchestrator,
        max_tokens: int | None = None,
        temperature: float | None = None,
        advance: Advance | None = None,
        stages: Callable[[int, int], None] | None = None,
    ) -> None:
        self.orchestrator = orchestrator
        self.nodes = orchestrator.nodes  # the pipeline's steps, run here item by item and grouped by expert
        self.pool = orchestrator.pool
        self.max_tokens = max_tokens
        self.temperature = temperature
        self._advance = advance or (lambda stage, count: None)
        self._stages = stages or (lambda experts, aggregation: None)  # totals, once known

    async def run(self, source: Path, out: Path, stop_after_experts: int | None = None) -> BatchReport:
        """Answer every line of ``source`` into ``out``; ``stop_after_experts`` stops once that many experts ran."""
        started = time.perf_counter()
        lines, digest = read_items(source)
        log = ProgressLog(out)
        progress = log.open(digest, self.pool.spec.name)
        report = BatchReport(items=len(lines))
        try:
            items = [self._route(line, progress, log) for line in lines]
            if not await self._ask_experts(items, progress, log, report, stop_after_experts):
                report.stopped = True
                return report
            escalated = self._review_escalations(items, progress, log)
            if escalated and not await self._ask_experts(escalated, progress, log, report, None, second_stage=True):
                report.stopped = True
                return report
            verdicts = await self._aggregate(items, progress, log, report)
            by_line: dict[int, list[Completion]] = {}
            for (number, _, _), completion in progress.calls.items():
                by_line.setdefault(number, []).append(completion)
            rows = [
                _row(item, verdicts.get(item.line.line), progress, by_line.get(item.line.line, [])) for item in items
            ]
            write_output(out, rows)
            report.failed = sum(1 for row in rows if row["error"] is not None)
        finally:
            log.close()
            report.seconds = time.perf_counter() - started
            await self.pool.release_all()  # each expert was needed once: give the memory back
        return report

    # -- routing -----------------------------------------------------------------------------
    def _route(self, line: InputLine, progress: Progress, log: ProgressLog) -> _Item:
        if line.item is None:
            return _Item(line, error=line.error)
        item = _Item(line, request=line.item.generation(self.max_tokens, self.temperature))
        recorded = progress.routes.get(line.line)
        if recorded is not None:
            item.decision = recorded
            return item
        try:
            item.decision = self._decide(line, item.request)
        except (NoExpertAvailable, ValueError) as error:
            item.error = f"line {line.line}: {error}"
            return item
        progress.routes[line.line] = item.decision
        log.route(line.line, item.decision)
        return item

    def _decide(self, line: InputLine, request: GenerationRequest) -> RoutingDecision:
        """The graph's own decision step (``PipelineNodes.decide``) on the router's fast path."""
        assert line.item is not None
        names = line.item.experts
        unknown = [name for name in names or [] if name not in self.pool.expert_names]
        if unknown:
            raise ValueError(f"experts: no expert named {', '.join(map(repr, unknown))} in this pool")
        query = next((m.content for m in reversed(request.messages) if m.role == "user"), "")
        return self.nodes.decide(self.orchestrator.router.understand(query), experts=names, k=line.item.k)

    # -- the experts, grouped by the dispatcher ----------------------------------------------
    async def _ask_experts(
        self,
        items: list[_Item],
        progress: Progress,
        log: ProgressLog,
        report: BatchReport,
        stop_after: int | None,
        second_stage: bool = False,
    ) -> bool:
        """Every missing expert call at once (``second_stage``: the escalations' second stages only); False when
        stopped after ``stop_after`` experts."""
        todo: list[tuple[_Item, str]] = []
        for item in items:
            for name in _experts_to_ask(item, second_stage):
                if (item.line.line, "expert", name) in progress.calls:
                    report.calls_reused += 1
                else:
                    todo.append((item, name))
        remaining = Counter(name for _, name in todo)
        self._stages(len(todo), 0)
        # the aggregator runs after every expert: keep it in memory if it is one of them
        self.pool.expect(
            Counter(item.decision.aggregator for item in items if item.decision and item.decision.aggregator)
        )
        stop = asyncio.Event()
        finished_experts = 0

        async def ask(item: _Item, name: str) -> None:
            nonlocal finished_experts
            assert item.request is not None
            try:
                completion = await self.pool.generate(name, item.request)
            except (ExpertCallFailed, ExpertUnavailable) as error:
                item.failures[name] = str(error)  # not recorded: a re-run tries again
            else:
                progress.calls[(item.line.line, "expert", name)] = completion
                log.call(item.line.line, "expert", name, completion)
                report.calls_made += 1
            self._advance("experts", 1)
            remaining[name] -= 1
            if remaining[name] == 0:
                log.sync()
                finished_experts += 1
                if stop_after is not None and finished_experts >= stop_after:
                    stop.set()

        tasks = [asyncio.create_task(ask(item, name)) for item, name in todo]
        if not tasks:
            return True
        waiter = asyncio.create_task(stop.wait())
        everything = asyncio.gather(*tasks)
        await asyncio.wait({waiter, everything}, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        if stop.is_set() and not everything.done():
            everything.cancel()
            await asyncio.gather(everything, return_exceptions=True)
            return False
        await everything
        return True

    def _review_escalations(self, items: list[_Item], progress: Progress, log: ProgressLog) -> list[_Item]:
        """Decide every pending escalation from its first stage's answers; returns the items that escalated."""
        escalated = []
        for item in items:
            decision = item.decision
            if item.error is not None or decision is None or decision.escalation is None:
                continue
            if decision.escalation.escalated is not None:  # reviewed in an earlier run (resumed)
                escalated += [item] if decision.escalation.escalated else []
                continue
            assert item.request is not None
            answered = candidates(decision, _answers(item, progress, decision.experts))
            item.decision = review_first_stage(self.orchestrator.aggregator, item.request.messages, decision, answered)
            progress.routes[item.line.line] = item.decision
            log.route(item.line.line, item.decision)
            if item.decision.escalation is not None and item.decision.escalation.escalated:
                escalated.append(item)
        return escalated

    # -- aggregation -------------------------------------------------------------------------
    async def _aggregate(
        self, items: list[_Item], progress: Progress, log: ProgressLog, report: BatchReport
    ) -> dict[int, Verdict]:
        verdicts: dict[int, Verdict] = {}
        steps: list[tuple[_Item, ModelStep, GenerationRequest]] = []
        for item in items:
            if item.error is not None or item.decision is None:
                continue
            plan = self._plan(item, progress)
            if plan is None:
                continue
            if isinstance(plan, Verdict):
                verdicts[item.line.line] = plan
                continue
            assert item.request is not None
            call = model_step_call(plan, item.request)
            recorded = progress.calls.get((item.line.line, plan.role, plan.expert))
            if recorded is not None:
                report.calls_reused += 1
                verdicts[item.line.line] = step_verdict(plan, recorded, call)
            else:
                steps.append((item, plan, call))
        self._stages(0, len(steps))
        self.pool.expect(Counter())  # from here on the queues say it all

        async def ask(item: _Item, step: ModelStep, call: GenerationRequest) -> None:
            try:
                completion = await self.pool.generate(step.expert, call)
            except (ExpertCallFailed, ExpertUnavailable) as error:
                verdicts[item.line.line] = step_fallback(step, str(error))
            else:
                progress.calls[(item.line.line, step.role, step.expert)] = completion
                log.call(item.line.line, step.role, step.expert, completion)
                report.calls_made += 1
                verdicts[item.line.line] = step_verdict(step, completion, call)
            self._advance("aggregation", 1)

        await asyncio.gather(*(ask(item, step, call) for item, step, call in steps))
        return verdicts

    def _plan(self, item: _Item, progress: Progress) -> Verdict | ModelStep | None:
        assert item.decision is not None and item.request is not None
        answers = {name: progress.calls.get((item.line.line, "expert", name)) for name in item.decision.experts}
        for name, completion in answers.items():
            if completion is not None and completion.error is not None:
                item.failures[name] = f"expert {name!r} could not answer: {completion.error}"
        usable = [n for n, c in answers.items() if c is not None and c.error is None and n not in item.failures]
        if not usable:
            reasons = "; ".join(f"{name}: {item.failures.get(name, 'not run')}" for name in item.decision.experts)
            item.error = f"line {item.line.line}: every recruited expert failed ({reasons})"
            return None
        return self.nodes.plan_aggregation(item.request.messages, item.decision, _answers(item, progress, usable))


@dataclass(frozen=True)
class BatchAnswer:
    """An expert's recorded answer to one item, as the pipeline's steps read it (``graph.Answered``)."""

    expert: str
    text: str
    finish_reason: str


def _answers(item: _Item, progress: Progress, names: list[str]) -> list[BatchAnswer]:
    """The recorded usable answers of ``names`` to ``item``, in that order."""
    answers = []
    for name in names:
        completion = progress.calls.get((item.line.line, "expert", name))
        if completion is not None and completion.error is None:
            answers.append(BatchAnswer(name, completion.text, completion.finish_reason))
    return answers


def _experts_to_ask(item: _Item, second_stage: bool) -> list[str]:
    if item.decision is None or item.error is not None:
        return []
    if second_stage:
        assert item.decision.escalation is not None
        return list(item.decision.escalation.then)
    escalation = item.decision.escalation
    if escalation is not None and escalation.escalated:  # resumed after the review: the first stage only here
        return [name for name in item.decision.experts if name not in escalation.then]
    return list(item.decision.experts)


def _row(item: _Item, verdict: Verdict | None, progress: Progress, calls: list[Completion]) -> dict[str, Any]:
    """The output line of one input line."""
    line = item.line
    ident = line.item.id if line.item is not None else line.raw_id
    if item.error is not None or verdict is None or item.decision is None:
        return {"line": line.line, "id": ident, "answer": None, "error": item.error or "not answered"}
    usage = {
        "prompt_tokens": sum(c.usage.prompt_tokens for c in calls),
        "completion_tokens": sum(c.usage.completion_tokens for c in calls),
        "cost": sum(c.usage.cost for c in calls),
    }
    answers = []
    for name in item.decision.experts:
        completion = progress.calls.get((line.line, "expert", name))
        text = completion.text if completion is not None and completion.error is None else None
        answers.append({"expert": name, "text": text, "error": item.failures.get(name)})
    return {
        "line": line.line,
        "id": ident,
        "answer": verdict.text,
        "finish_reason": verdict.finish_reason,
        "strategy": verdict.strategy,
        "shortcut": verdict.shortcut,
        "chosen_expert": verdict.expert,
        "experts": item.decision.experts,
        "answers": answers,
        "usage": usage,
        "note": verdict.note,
        "error": None,
    }
