"""``PipelineNodes``: the steps of one request as the graph's nodes (``graph.py`` wires them).

Each node is a small async method. Understanding the query and recruiting its experts are two methods but one node
(``route``): a LangGraph super-step costs more machinery than both steps' own work (``bench/breakdown.py``). For the
same reason a plan that needs no more, one expert and no escalation, is carried out inside ``route`` (ask, then
aggregate: the same methods) and the graph ends after one super-step. Any other plan fans out with one ``Send`` per
chosen expert, so the experts run concurrently and their answers are gathered by the state's reducers. An expert that
fails (after the pool's own retries) is replaced at once by the next best healthy expert the router ranked
(``replacements.py``); the answer is flagged ``partial`` when a recruited expert's place stayed empty while others
answered. When the caller streams, nodes write the pipeline's events (``events.py``): the routing decision first, then
text (the single expert's when k = 1, the synthesising aggregator's, or the text a vote, the consensus short-cut or
the judge chose).

Runs in: the driver.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

from langgraph.graph import END
from langgraph.types import Command, Send

from aggregator import Aggregator, AggregatorChoice, ModelStep, Verdict
from experts import span, traceparent
from experts.errors import ExpertCallFailed, ExpertUnavailable
from experts.runtime import ExpertClient, is_client_mistake
from experts.types import Completion, GenerationRequest, Message
from orchestrator.pipeline.escalation import review_first_stage
from orchestrator.pipeline.events import (
    AnswerEvent,
    DecisionEvent,
    EscalationEvent,
    ExpertTextEvent,
    TextEvent,
    emit,
)
from orchestrator.pipeline.ledger import CallLedger
from orchestrator.pipeline.offload import aggregation_chars, off_loop
from orchestrator.pipeline.replacements import Reserve, unfilled, with_replacements
from orchestrator.pipeline.state import (
    CallRecord,
    ExpertAnswer,
    ExpertTask,
    PipelineRequest,
    PipelineState,
    Replacement,
)
from orchestrator.pipeline.steps import (
    AllExpertsFailed,
    Answered,
    candidates,
    forced_decision,
    model_step_call,
    step_fallback,
    step_verdict,
    wants_json,
    with_measured_aggregator,
)
from orchestrator.pipeline.tool_calls import call_vote, tool_call_verdict
from router import KeywordExtractor, Router, RoutingDecision, SkillEstimate


class PipelineNodes:
    """The steps of one request, bound to a pool, a router and a synthesizer."""

    def __init__(
        self, pool: ExpertClient, router: Router, aggregator: Aggregator, aggregators: AggregatorChoice | None = None
    ) -> None:
        self.pool = pool
        self.router = router
        self.aggregator = aggregator
        self.aggregators = aggregators  # measured aggregator per category, when bench-aggregators has run

    async def understand(self, state: PipelineState) -> dict[str, Any]:
        started = time.perf_counter()
        query = state["request"].query
        hint, calls = await self._keyword_skills(query, state["request"].generation.request_id)
        _bill(state["request"], calls)
        estimate = self.router.understand(query, hint=hint)
        return {"estimate": estimate, "calls": calls, "timings_ms": {"understand": _ms_since(started)}}

    async def _keyword_skills(
        self, query: str, request_id: str = ""
    ) -> tuple[dict[str, float] | None, list[CallRecord]]:
        """The LLM path: when the pool has a keyword expert, ask it (n samples, batched by its actor)."""
        name = self.pool.spec.roles.keywords
        if name is None or not self.pool.is_healthy(name):
            return None, []
        extractor = KeywordExtractor(self.router.vocabulary)
        started = time.perf_counter()
        outcomes = await asyncio.gather(
            *(
                self.pool.generate(name, replace(request, request_id=request_id, traceparent=traceparent()))
                for request in extractor.requests(query)
            ),
            return_exceptions=True,
        )
        answers = [o for o in outcomes if isinstance(o, Completion) and o.error is None]
        calls = [CallRecord.of(name, "keywords", answer) for answer in answers]
        failed = [o for o in outcomes if not (isinstance(o, Completion) and o.error is None)]
        calls += [CallRecord.failure(name, "keywords", str(o), time.perf_counter() - started) for o in failed]
        if not answers:  # the fast path still routes: a keyword failure must not fail the request
            return None, calls
        return extractor.combine([answer.text for answer in answers]).skills or None, calls

    async def recruit(self, state: PipelineState) -> dict[str, Any]:
        started = time.perf_counter()
        request = state["request"]
        decision = self.decide(
            state["estimate"],
            experts=request.experts,
            k=request.k,
            policy=request.policy,
            budget=request.budget,
            started=started,
        )
        if request.stream:
            emit(DecisionEvent(decision))
        reserve = Reserve(decision, self.pool.spec.resilience.replacement_rounds)
        return {"decision": decision, "reserve": reserve, "timings_ms": {"recruit": _ms_since(started)}}

    def decide(
        self,
        estimate: SkillEstimate,
        *,
        experts: list[str] | None = None,
        k: int | None = None,
        policy: str | None = None,
        budget: float | None = None,
        started: float | None = None,
    ) -> RoutingDecision:
        """The routing decision over the healthy experts: the ``experts`` named by the caller, else the router's
        (with the aggregator measured best for the query's category). Shared by ``recruit``, ``/v1/route`` and
        batch mode."""
        healthy = set(self.pool.healthy_names())
        if experts:
            return forced_decision(experts, healthy, self.aggregator.aggregator)
        decision = self.router.recruit(estimate, healthy=healthy, k=k, policy=policy, started=started, budget=budget)
        return with_measured_aggregator(decision, self.aggregators)

    async def route(self, state: PipelineState) -> Command[str]:
        """Understand the query, then recruit its experts (timed as two steps: ``understand``, ``recruit``), and say
        where the graph goes next: one ``Send`` per recruited expert to ``ask_expert``.

        A plan of one expert without an escalation is carried out here as well (the expert's answer, then its
        aggregation: a passthrough), so such a request is a single LangGraph super-step and the graph ends. The
        route is a ``Command`` rather than a conditional edge: LangGraph evaluates an edge as a runnable of its own.
        """
        update = await self.routed(state)
        return Command(update=update, goto=END if "final" in update else self.fan_out({**state, **update}))

    async def routed(self, state: PipelineState) -> dict[str, Any]:
        """What ``route`` writes into the state: the decision and, for one expert without an escalation, its answer
        and the aggregation too (``final``)."""
        understood = await self.understand(state)
        recruited = await self.recruit({**state, **understood})  # type: ignore[typeddict-item]
        routed = {**understood, **recruited, "timings_ms": {**understood["timings_ms"], **recruited["timings_ms"]}}
        decision = recruited["decision"]
        if len(decision.experts) != 1 or decision.escalation is not None:
            return routed
        request, name = state["request"], decision.experts[0]
        task = ExpertTask(request=request, expert=name, stream=request.stream, reserve=recruited["reserve"], stage=1)
        with span("moesaic.ask_expert", {"moesaic.expert": name, "moesaic.stage": 1}):
            answered = await self.ask_expert(task)
        with span("moesaic.aggregate", {}):
            aggregated = await self.aggregate(
                {**state, **routed, "answers": answered["answers"], "replacements": answered["replacements"]}
            )
        return {
            **routed,
            **answered,
            **aggregated,
            "calls": routed["calls"] + answered["calls"] + aggregated["calls"],
            "timings_ms": {**routed["timings_ms"], **answered["timings_ms"], **aggregated["timings_ms"]},
        }

    def fan_out(self, state: PipelineState) -> list[Send]:
        """One ``Send`` per recruited expert."""
        decision = state["decision"]
        stream_single = state["request"].stream and len(decision.experts) == 1 and decision.escalation is None
        return [
            Send(
                "ask_expert",
                ExpertTask(
                    request=state["request"], expert=name, stream=stream_single, reserve=state.get("reserve"), stage=1
                ),
            )
            for name in decision.experts
        ]

    async def after_answers(self, state: PipelineState) -> str:
        """Once a stage has answered: review the first stage of an escalation, else aggregate."""
        escalation = state["decision"].escalation
        return "review" if escalation is not None and escalation.escalated is None else "aggregate"

    async def review(self, state: PipelineState) -> dict[str, Any]:
        """Decide whether the first stage settles the answer or the second stage is asked (``escalation``)."""
        started = time.perf_counter()
        request, decision = state["request"], state["decision"]
        usable = [a for a in state.get("answers", []) if a.error is None]
        answered, calls = candidates(decision, usable), {a.expert: a.tool_calls for a in usable}
        chars = aggregation_chars(request.messages, answered)  # large answers: extracted in a worker thread
        review = (self.aggregator, request.messages, decision, answered, calls)
        decision = await off_loop(chars, review_first_stage, *review)
        if request.stream:
            if decision.escalation is not None:
                emit(EscalationEvent(decision.escalation))
        return {"decision": decision, "timings_ms": {"review": _ms_since(started)}}

    async def second_stage(self, state: PipelineState) -> list[Send] | str:
        """The second stage's ``Send``s when the review escalated, else on to aggregation."""
        decision = state["decision"]
        assert decision.escalation is not None
        if not decision.escalation.escalated:
            return "aggregate"
        return [
            Send(
                "ask_expert",
                ExpertTask(request=state["request"], expert=name, stream=False, reserve=state.get("reserve"), stage=2),
            )
            for name in decision.escalation.then
        ]

    async def ask_expert(self, task: ExpertTask) -> dict[str, Any]:
        """Ask one recruited expert; if it fails, ask the next best healthy one in its place (rounds permitting)."""
        request, name, reserve = task["request"], task["expert"], task.get("reserve")
        answers: list[ExpertAnswer] = []
        calls: list[CallRecord] = []
        replacements: list[Replacement] = []
        timings: dict[str, float] = {}
        rounds_left = reserve.rounds if reserve is not None else 0
        while True:
            started = time.perf_counter()
            streamed = _Streamed()
            # its tokens are the answer (one expert), or shown in its own column (a console asked for them)
            own_tokens = name if request.stream and request.expert_deltas and not task["stream"] else None
            try:
                stream = task["stream"] or own_tokens is not None
                completion = await self._call(name, request.generation, stream, streamed, own_tokens, request.ledger)
            except (ExpertCallFailed, ExpertUnavailable) as error:
                code = getattr(error, "code", None)
                answers.append(ExpertAnswer(name, "", "error", str(error), code))
                failure = CallRecord.failure(name, "expert", str(error), time.perf_counter() - started)
                calls.append(replace(failure, stage=task["stage"]))
            else:
                answer = ExpertAnswer(name, completion.text, completion.finish_reason, completion.error)
                answers.append(replace(answer, tool_calls=completion.tool_calls))
                calls.append(replace(CallRecord.of(name, "expert", completion), stage=task["stage"]))
            timings[f"expert:{name}"] = _ms_since(started)
            _bill(request, calls[-1:])
            if request.stream:  # each answer as it lands (the console's columns); consumers may ignore it
                emit(AnswerEvent(answers[-1], calls[-1]))
            failed = answers[-1]
            # no replacement for an answer, a caller's mistake (it would fail alike) or a stream already begun
            if failed.error is None or is_client_mistake(failed.error_code) or streamed.pieces or rounds_left <= 0:
                break
            assert reserve is not None
            replacement = reserve.take(self.pool.is_healthy)
            if replacement is None:
                break
            replacements.append(Replacement(name, replacement, failed.error))
            name, rounds_left = replacement, rounds_left - 1
        return {"answers": answers, "calls": calls, "replacements": replacements, "timings_ms": timings}

    async def aggregate(self, state: PipelineState) -> dict[str, Any]:
        started = time.perf_counter()
        request, recruited = state["request"], state["decision"]
        replacements = state.get("replacements", [])
        decision = with_replacements(recruited, replacements)
        by_name = {answer.expert: answer for answer in state.get("answers", [])}
        usable = [by_name[name] for name in decision.experts if name in by_name and by_name[name].error is None]
        if not usable:
            failures = "; ".join(f"{a.expert}: {a.error}" for a in by_name.values())
            codes = [answer.error_code for answer in by_name.values()]
            raise AllExpertsFailed(f"every recruited expert failed ({failures})", codes)
        called = call_vote(decision, usable)  # experts asked for tools: call or answer, and which calls
        if called is not None and not called.call_wins:
            usable = [answer for answer in usable if not answer.tool_calls]  # answering won: the texts are aggregated
        chars = aggregation_chars(request.messages, usable)  # large answers: extracted in a worker thread
        if called is not None and called.call_wins:  # the winning calls go back to the caller, never rewritten
            plan: Verdict | ModelStep = tool_call_verdict(called, usable)
        else:
            plan = await off_loop(
                chars, self.plan_aggregation, request.messages, decision, usable, request.strategy, request.consensus
            )
        calls: list[CallRecord] = []
        streamed = False  # whether the aggregator's own tokens went out as it wrote them
        if isinstance(plan, ModelStep):
            verdict, calls, streamed = await self._model_step(request, plan, chars)
        else:
            verdict = plan
        # Already streamed: the single recruited expert's tokens (or its replacement's), or the aggregator's.
        streamed_already = len(recruited.experts) == 1 or (verdict.expert is None and streamed)
        if request.stream and not streamed_already:  # vote, short-cut, judge's pick, fallback: the chosen text
            emit(TextEvent(verdict.text))
        answered = {answer.expert for answer in usable}
        return {
            "final": verdict,
            "decision": decision,
            "partial": bool(unfilled(recruited, replacements, answered)),
            "failed_experts": [name for name, answer in by_name.items() if answer.error is not None],
            "calls": calls,
            "timings_ms": {"aggregate": _ms_since(started)},
        }

    def plan_aggregation(
        self,
        messages: list[Message],
        decision: RoutingDecision,
        answers: Sequence[Answered],
        strategy: str | None = None,
        consensus: float | None | Literal["pool"] = "pool",
    ) -> Verdict | ModelStep:
        """How the experts' usable answers become one: a verdict now, or the aggregator's or judge's call to make.

        ``strategy`` and ``consensus`` override the pool's (``None`` consensus: no short-cut).
        """
        return self.aggregator.plan(
            messages,
            candidates(decision, answers),
            strategy=strategy,
            consensus=consensus,
            aggregator=decision.aggregator,
        )

    async def _model_step(
        self, request: PipelineRequest, step: ModelStep, chars: int = 0
    ) -> tuple[Verdict, list[CallRecord], bool]:
        """Make the aggregator's or judge's call; if it fails, the vote's answer stands (the experts did answer).

        Returns the verdict, the call's record, and whether its tokens were streamed as written: not when the
        caller asked for JSON, since a synthesis cut at max_tokens is then replaced by the vote's answer.
        ``chars``: the answers' size; with the reply's, whether reading the verdict runs in a worker thread.
        """
        call = model_step_call(step, request.generation, request.aggregator_max_tokens)
        stream = request.stream and step.stream_reply and not wants_json(call)
        started = time.perf_counter()
        try:
            completion = await self._call(step.expert, call, stream, ledger=request.ledger)
        except (ExpertCallFailed, ExpertUnavailable) as error:
            record = CallRecord.failure(step.expert, step.role, str(error), time.perf_counter() - started)
            _bill(request, [record])
            return step_fallback(step, str(error)), [record], False
        record = CallRecord.of(step.expert, step.role, completion)
        _bill(request, [record])
        verdict = await off_loop(chars + len(completion.text), step_verdict, step, completion, call)
        return verdict, [record], stream

    async def _call(
        self,
        name: str,
        request: GenerationRequest,
        stream: bool,
        streamed: _Streamed | None = None,
        own_tokens: str | None = None,
        ledger: CallLedger | None = None,
    ) -> Completion:
        """Call an expert; when streaming, forward its text deltas to the graph's stream: as the answer's text
        (counted in ``streamed``), or, with ``own_tokens``, as that expert's own ``expert_delta`` events, which are
        progress only (a replacement may still follow)."""
        request = replace(request, traceparent=traceparent())  # the actor's span joins this request's trace
        if not stream:
            completion = await self.pool.generate(name, request)
        else:
            completion = None
            async for item in self.pool.stream(name, request):
                if isinstance(item, str) and ledger is not None:
                    ledger.streamed(name, item)  # billed as written if the call never ends (a dropped stream)
                if isinstance(item, str) and own_tokens is not None:
                    emit(ExpertTextEvent(own_tokens, item))
                elif isinstance(item, str):
                    emit(TextEvent(item))
                    if streamed is not None:
                        streamed.pieces += 1
                else:
                    completion = item
            if completion is None:
                raise ExpertCallFailed(f"expert {name!r} ended its stream without a completion")
        if completion.error is not None:
            raise ExpertCallFailed(f"expert {name!r} could not answer: {completion.error}", completion.error_code)
        return completion


def _bill(request: PipelineRequest, calls: list[CallRecord]) -> None:
    """Write ended calls into the request's ledger (if it has one) the moment they end."""
    if request.ledger is not None:
        for call in calls:
            request.ledger.record(call)


@dataclass
class _Streamed:
    """How many pieces of an expert's answer went out to the client (then it cannot be replaced)."""

    pieces: int = 0


def _ms_since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)
