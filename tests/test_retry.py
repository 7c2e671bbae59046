"""Retries: which failures are transient, the backoff, the pool file's resilience sections, and the retry
loop of ``GuardedExpert`` over a scripted actor handle (no Ray: every outcome and wait is chosen by the test)."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from typing import Any

import pytest

from experts.config._pool_spec import PoolFileError, parse_pool
from experts.config._resilience_spec import ResilienceSpec, RetrySpec
from experts.errors import ErrorCode, ExpertCallFailed, ExpertUnavailable, code_for_status
from experts.runtime._guarded import GuardedExpert
from experts.runtime._retry import Backoff, is_client_mistake, is_transient
from experts.types import Completion, GenerationRequest, Message, Usage


# -- classification ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("status", "code"),
    [
        (429, "rate_limited"),
        (408, "upstream_timeout"),
        (500, "upstream_unavailable"),
        (503, "upstream_unavailable"),
        (400, None),
        (401, None),
        (404, None),
    ],
)
def test_a_hosted_apis_status_is_a_failure_code(status: int, code: str | None) -> None:
    assert code_for_status(status) == code


def test_transient_and_client_mistakes() -> None:
    for code in (
        ErrorCode.EXPERT_TIMEOUT,
        ErrorCode.ACTOR_DIED,
        "rate_limited",
        "upstream_unavailable",
        "connection_error",
    ):
        assert is_transient(code) and not is_client_mistake(code)
    for code in ("context_length_exceeded", "invalid_moe_routing"):
        assert is_client_mistake(code) and not is_transient(code)
    assert not is_transient(None) and not is_client_mistake(None)


def test_backoff_doubles_up_to_the_cap_with_bounded_jitter() -> None:
    backoff = Backoff(RetrySpec(attempts=6, base_delay_s=0.5, max_delay_s=3.0, jitter=0.5), random.Random(7))
    for retry, ceiling in [(1, 0.5), (2, 1.0), (3, 2.0), (4, 3.0), (5, 3.0)]:
        delays = [backoff.delay(retry) for _ in range(50)]
        assert all(ceiling * 0.5 <= delay <= ceiling for delay in delays)
        assert len(set(delays)) > 1  # jittered: retries do not arrive in step
    fixed = Backoff(RetrySpec(base_delay_s=0.5, jitter=0.0), random.Random(0))
    assert fixed.delay(1) == 0.5 and fixed.delay(2) == 1.0


# -- the pool file ---------------------------------------------------------------------------
def pool(section: dict[str, Any] | None = None, expert: dict[str, Any] | None = None) -> Any:
    """Experts a and b; ``section`` is the pool's resilience section, ``expert`` a's own keys."""
    a = {"name": "a", "backend": "echo", "model": "echo", **(expert or {})}
    raw: dict[str, Any] = {"experts": [a, {"name": "b", "backend": "echo", "model": "echo"}]}
    if section is not None:
        raw["resilience"] = section
    return parse_pool(raw, "pool.yaml")


def test_an_experts_section_overrides_the_pools_key_by_key() -> None:
    spec = pool(
        {"timeout_s": 60, "retry": {"attempts": 4, "base_delay_s": 1.0}, "replacement_rounds": 2},
        {"resilience": {"retry": {"attempts": 2}, "breaker": {"cooldown_s": 5}}},
    )
    a, b = spec.resilience_for("a"), spec.resilience_for("b")
    assert (a.timeout_s, a.retry.attempts, a.retry.base_delay_s, a.breaker.cooldown_s) == (60, 2, 1.0, 5)
    assert (b.timeout_s, b.retry.attempts, b.breaker.cooldown_s) == (60, 4, 30.0)
    assert spec.resilience.replacement_rounds == 2
    assert pool().resilience_for("a") == ResilienceSpec()  # defaults without any section
    assert pool({"timeout_s": None}).resilience_for("a").timeout_s is None


@pytest.mark.parametrize(
    ("section", "expert", "named"),
    [
        ({"retry": {"attempts": 0}}, {}, "resilience.retry.attempts"),
        ({"breaker": {"window": 5, "min_calls": 10}}, {}, "resilience.breaker"),
        ({"timeout": 3}, {}, "resilience.timeout"),
        (None, {"resilience": {"replacement_rounds": 1}}, "experts[0] (name: 'a').resilience.replacement_rounds"),
    ],
)
def test_bad_resilience_settings_name_the_field(section: Any, expert: dict[str, Any], named: str) -> None:
    with pytest.raises(PoolFileError, match="pool.yaml") as raised:
        pool(section, expert)
    assert named in str(raised.value)


# -- the retry loop ----------------------------------------------------------------------------
class ScriptedHandle:
    """Stands in for ``ActorHandle``: each try takes the next scripted outcome (a Completion or an error)."""

    name = "x"
    start_timeout_s = 5.0

    def __init__(self, *outcomes: Completion | Exception, pieces: tuple[str, ...] = ()) -> None:
        self.outcomes = list(outcomes)
        self.pieces = pieces
        self.tries = 0
        self.ready = True
        self.restarting = False
        self.report: dict[str, Any] = {"state": "ready"}
        self.restart_waits = 0

    def _next(self) -> Completion:
        self.tries += 1
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    async def call(self, method: str, *args: Any, timeout_s: float | None = None) -> Any:
        if method == "generate_batch":
            return [self._next() for _ in args[0]]
        return self._next()

    async def stream(self, request: GenerationRequest, timeout_s: float | None) -> AsyncIterator[str | Completion]:
        completion = self._next()
        if completion.error is None:
            for piece in self.pieces:
                yield piece
        yield completion

    async def wait_restarted(self, timeout_s: float | None) -> bool:
        self.restart_waits += 1
        return True


def ok(text: str = "fine") -> Completion:
    return Completion(text, "stop", Usage(1, 1))


def guarded(handle: ScriptedHandle, attempts: int = 3, failures: int = 5) -> tuple[GuardedExpert, list[float]]:
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    settings = ResilienceSpec.model_validate(
        {"retry": {"attempts": attempts, "base_delay_s": 0.1, "jitter": 0.0}, "breaker": {"failures": failures}}
    )
    return GuardedExpert(handle, settings, max_batch_size=8, rng=random.Random(0), sleep=sleep), waits  # type: ignore[arg-type]


ASK = GenerationRequest([Message("user", "hi")])


async def test_transient_failures_are_retried_with_backoff_until_an_answer() -> None:
    handle = ScriptedHandle(
        ExpertCallFailed("slow", ErrorCode.EXPERT_TIMEOUT),
        Completion.failed("RateLimitError: 429", "m", ErrorCode.RATE_LIMITED),
        ok("third time"),
    )
    expert, waits = guarded(handle)
    assert (await expert.generate(ASK)).text == "third time"
    assert handle.tries == 3 and waits == [0.1, 0.2] and expert.retries == 2
    assert expert.breaker.state == "closed"


async def test_a_caller_mistake_and_an_unknown_failure_are_not_retried() -> None:
    handle = ScriptedHandle(
        Completion.failed("ContextWindowExceededError: too long", "m", ErrorCode.CONTEXT_LENGTH_EXCEEDED)
    )
    expert, waits = guarded(handle, failures=1)
    completion = await expert.generate(ASK)
    assert completion.error_code == "context_length_exceeded" and handle.tries == 1 and waits == []
    assert expert.breaker.state == "closed"  # the request's fault, not the expert's

    broken = ScriptedHandle(ExpertCallFailed("expert 'x' failed: BackendError: no"), ok())
    expert, waits = guarded(broken)
    with pytest.raises(ExpertCallFailed, match="BackendError"):
        await expert.generate(ASK)
    assert broken.tries == 1 and waits == []


async def test_the_last_failure_is_raised_when_tries_run_out_and_a_dead_actor_is_waited_for() -> None:
    handle = ScriptedHandle(
        ExpertCallFailed("died", ErrorCode.ACTOR_DIED), ExpertCallFailed("late", ErrorCode.EXPERT_TIMEOUT)
    )
    expert, waits = guarded(handle, attempts=2)
    with pytest.raises(ExpertCallFailed, match="late"):
        await expert.generate(ASK)
    assert handle.restart_waits == 1 and waits == []  # after a death: wait for the restart, not a backoff


async def test_an_open_circuit_refuses_the_call_and_stops_retries() -> None:
    handle = ScriptedHandle(*[ExpertCallFailed("slow", ErrorCode.EXPERT_TIMEOUT)] * 5)
    expert, _ = guarded(handle, attempts=5, failures=2)
    with pytest.raises(ExpertCallFailed, match="slow"):
        await expert.generate(ASK)
    assert handle.tries == 2 and expert.breaker.state == "open"  # opened after 2: no third try
    assert not expert.available()
    with pytest.raises(ExpertUnavailable, match="circuit open"):
        await expert.generate(ASK)


async def test_a_batch_retries_only_its_transient_failures() -> None:
    unavailable = Completion.failed("ServiceUnavailableError: 503", "m", ErrorCode.UPSTREAM_UNAVAILABLE)
    handle = ScriptedHandle(ok("a"), unavailable, Completion.failed("AuthenticationError", "m"), ok("b again"))
    expert, waits = guarded(handle)
    results = await expert.generate_batch([ASK, ASK, ASK])
    assert [getattr(r, "text", None) for r in results] == ["a", "b again", ""]
    assert isinstance(results[2], Completion) and results[2].error == "AuthenticationError"
    assert handle.tries == 4 and waits == [0.1]


async def test_a_stream_is_retried_only_before_its_first_piece() -> None:
    handle = ScriptedHandle(
        Completion.failed("RateLimitError: 429", "m", ErrorCode.RATE_LIMITED), ok("one two"), pieces=("one ", "two")
    )
    expert, _ = guarded(handle)
    items = [item async for item in expert.stream(ASK)]
    assert items[:2] == ["one ", "two"] and isinstance(items[2], Completion) and handle.tries == 2

    class BreaksMidStream(ScriptedHandle):
        async def stream(self, request: GenerationRequest, timeout_s: float | None) -> AsyncIterator[str | Completion]:
            self.tries += 1
            yield "one "
            raise ExpertCallFailed("no next piece", ErrorCode.EXPERT_TIMEOUT)

    broken = BreaksMidStream()
    expert, _ = guarded(broken)
    received: list[str | Completion] = []
    with pytest.raises(ExpertCallFailed, match="no next piece"):
        async for item in expert.stream(ASK):
            received.append(item)
    assert received == ["one "] and broken.tries == 1  # part of the answer went out: no second try
