"""The circuit breaker on a fake clock: when it opens, when it probes, when it closes again."""

from __future__ import annotations

from experts.config._resilience_spec import BreakerSpec
from experts.runtime._breaker import CircuitBreaker


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def breaker(clock: FakeClock, **settings: object) -> CircuitBreaker:
    spec = BreakerSpec.model_validate({"failures": 3, "failure_rate": None, "cooldown_s": 10.0, **settings})
    return CircuitBreaker(spec, clock)


def fail(circuit: CircuitBreaker, times: int = 1) -> None:
    for _ in range(times):
        ticket = circuit.try_acquire()
        assert ticket is not None
        circuit.failure(ticket)


def succeed(circuit: CircuitBreaker) -> None:
    ticket = circuit.try_acquire()
    assert ticket is not None
    circuit.success(ticket)


def test_consecutive_failures_open_it_and_a_success_in_between_resets_the_count() -> None:
    clock = FakeClock()
    circuit = breaker(clock)
    fail(circuit, 2)
    succeed(circuit)
    fail(circuit, 2)
    assert circuit.state == "closed" and circuit.available()
    fail(circuit)
    assert circuit.state == "open" and not circuit.available() and circuit.opened == 1
    assert circuit.try_acquire() is None
    assert circuit.retry_in_s() == 10.0


def test_a_failure_rate_over_the_window_opens_it_once_the_window_holds_enough_calls() -> None:
    clock = FakeClock()
    circuit = breaker(clock, failures=100, failure_rate=0.5, window=6, min_calls=4)
    fail(circuit)
    fail(circuit)
    assert circuit.state == "closed"  # 2 of 2 failed, but the window does not hold min_calls yet
    succeed(circuit)
    succeed(circuit)
    succeed(circuit)
    assert circuit.state == "closed"
    fail(circuit)
    assert circuit.state == "open"  # 3 failures in the last 6 calls reach the 0.5 rate


def test_after_the_cooldown_one_probe_goes_through_and_its_success_closes_it() -> None:
    clock = FakeClock()
    circuit = breaker(clock)
    fail(circuit, 3)
    clock.now += 9.9
    assert circuit.state == "open" and circuit.try_acquire() is None
    clock.now += 0.1
    assert circuit.state == "half_open" and circuit.available()
    probe = circuit.try_acquire()
    assert probe is not None and probe.probe
    assert not circuit.available() and circuit.try_acquire() is None  # one probe at a time
    circuit.success(probe)
    assert circuit.state == "closed" and circuit.available()
    fail(circuit, 2)
    assert circuit.state == "closed"  # the history was forgotten: 2 new failures do not reopen it


def test_a_failed_probe_opens_it_for_another_cooldown() -> None:
    clock = FakeClock()
    circuit = breaker(clock)
    fail(circuit, 3)
    clock.now += 10
    probe = circuit.try_acquire()
    assert probe is not None
    circuit.failure(probe)
    assert circuit.state == "open" and circuit.opened == 2
    clock.now += 5
    assert circuit.state == "open"
    clock.now += 5
    assert circuit.state == "half_open"


def test_an_abandoned_probe_frees_the_slot_without_a_verdict() -> None:
    clock = FakeClock()
    circuit = breaker(clock)
    fail(circuit, 3)
    clock.now += 10
    probe = circuit.try_acquire()
    assert probe is not None
    circuit.release(probe)  # the caller was cancelled
    assert circuit.state == "half_open" and circuit.available()
    second = circuit.try_acquire()
    assert second is not None and second.probe


def test_outcomes_of_tries_that_started_before_it_opened_change_nothing() -> None:
    clock = FakeClock()
    circuit = breaker(clock)
    early = [circuit.try_acquire() for _ in range(5)]
    assert all(ticket is not None for ticket in early)
    for ticket in early[:3]:
        circuit.failure(ticket)  # type: ignore[arg-type]
    assert circuit.state == "open"
    circuit.success(early[3])  # type: ignore[arg-type]
    circuit.failure(early[4])  # type: ignore[arg-type]
    circuit.failure(early[4])  # type: ignore[arg-type]  # settled once only
    assert circuit.state == "open" and circuit.opened == 1
