"""A circuit breaker per expert: stop calling an expert that keeps failing, and try it again later.

States:

* ``closed``: calls go through; each outcome is recorded. ``failures`` consecutive failed
  calls, or a failure share of at least ``failure_rate`` over the last ``window`` calls (once
  ``min_calls`` are in it), open the circuit.
* ``open``: no calls; the expert is unhealthy, so the router recruits someone else and a
  direct call gets a 503. After ``cooldown_s`` it becomes
* ``half_open``: the next call goes through as a probe (one at a time). Its success closes
  the circuit (history forgotten); its failure opens it for another cool-down.

Callers take a ticket before each try (``try_acquire``), then report ``success``,
``failure`` or ``release`` (the try was abandoned, e.g. the client went away: no verdict).
The clock is injectable, so tests step time by hand.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from experts.config import BreakerSpec

BreakerState = Literal["closed", "open", "half_open"]


@dataclass
class Ticket:
    """Permission for one try; ``probe`` when it is the half-open circuit's one trial call."""

    probe: bool = False
    settled: bool = False


class CircuitBreaker:
    """The failure history of one expert and the verdict it implies."""

    def __init__(self, spec: BreakerSpec, clock: Callable[[], float] = time.monotonic) -> None:
        self.spec = spec
        self.clock = clock
        self._outcomes: deque[bool] = deque(maxlen=spec.window)  # True = failure
        self._consecutive = 0
        self._opened_at: float | None = None
        self._probing = False
        self.opened = 0  # times the circuit opened (metrics, tests)

    @property
    def state(self) -> BreakerState:
        if self._opened_at is None:
            return "closed"
        if self.clock() - self._opened_at < self.spec.cooldown_s:
            return "open"
        return "half_open"

    def available(self) -> bool:
        """Whether a call would be let through now (routing asks this; it takes no ticket)."""
        state = self.state
        return state == "closed" or (state == "half_open" and not self._probing)

    def retry_in_s(self) -> float:
        """Seconds until an open circuit lets a probe through (0 when it would now)."""
        if self._opened_at is None:
            return 0.0
        return max(0.0, self.spec.cooldown_s - (self.clock() - self._opened_at))

    def try_acquire(self) -> Ticket | None:
        """A ticket for one try, or None while the circuit is open (or its probe is out)."""
        state = self.state
        if state == "closed":
            return Ticket()
        if state == "half_open" and not self._probing:
            self._probing = True
            return Ticket(probe=True)
        return None

    def success(self, ticket: Ticket) -> None:
        if not self._settle(ticket):
            return
        if ticket.probe:
            self._reset()  # the probe answered: closed again, history forgotten
        elif self._opened_at is None:  # a try that started before the circuit opened does not close it
            self._consecutive = 0
            self._outcomes.append(False)

    def failure(self, ticket: Ticket) -> None:
        if not self._settle(ticket):
            return
        if ticket.probe:
            self._open()  # the probe failed: another cool-down
            return
        if self._opened_at is not None:
            return  # a try that started before the circuit opened: the verdict stands
        self._consecutive += 1
        self._outcomes.append(True)
        if self._consecutive >= self.spec.failures or self._rate_exceeded():
            self._open()

    def release(self, ticket: Ticket) -> None:
        """The try was abandoned before an outcome (cancelled): no verdict, the probe slot frees up."""
        self._settle(ticket)

    def _settle(self, ticket: Ticket) -> bool:
        if ticket.settled:
            return False
        ticket.settled = True
        if ticket.probe:
            self._probing = False
        return True

    def _rate_exceeded(self) -> bool:
        rate = self.spec.failure_rate
        if rate is None or len(self._outcomes) < self.spec.min_calls:
            return False
        return sum(self._outcomes) / len(self._outcomes) >= rate

    def _open(self) -> None:
        self._opened_at = self.clock()
        self._probing = False
        self._consecutive = 0
        self._outcomes.clear()
        self.opened += 1

    def _reset(self) -> None:
        self._opened_at = None
        self._probing = False
        self._consecutive = 0
        self._outcomes.clear()
