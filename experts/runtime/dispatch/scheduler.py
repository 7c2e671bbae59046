"""Which expert runs next: the dispatcher's policy, kept pure so tests drive it with a fake clock.

Loading a model costs seconds; one more request in a batch costs little (decoding is
memory-bound). So the dispatcher runs an expert over everything queued for it, and this
policy orders the experts that have queued work:

1. overdue first: an expert whose oldest request has waited longer than the latency bound
   runs next (the longest-waiting first), so a busy resident expert cannot starve the others;
2. then by residency: resident, being loaded (a prefetch underway), parked in host RAM, on
   disk; running what is already in memory avoids a load;
3. then the most queued requests (a load pays off over a bigger batch);
4. then the oldest wait.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

RESIDENCY_RANK = {"resident": 3, "loading": 2, "parked": 1}  # anything else (disk, evicting): 0


@dataclass(frozen=True)
class QueueView:
    """What the policy sees of one expert's queue."""

    name: str
    depth: int
    oldest: float  # when its oldest queued request arrived (the dispatcher's clock)
    residency: str = "resident"


def order(queues: Iterable[QueueView], now: float, latency_bound_s: float | None) -> list[str]:
    """Experts with queued work, the one to run next first (see the module docstring)."""
    waiting = [queue for queue in queues if queue.depth > 0]

    def key(queue: QueueView) -> tuple[int, float, int, int, float]:
        waited = now - queue.oldest
        overdue = latency_bound_s is not None and waited > latency_bound_s
        if overdue:
            return (0, -waited, 0, 0, 0.0)
        return (1, 0.0, -RESIDENCY_RANK.get(queue.residency, 0), -queue.depth, -waited)

    return [queue.name for queue in sorted(waiting, key=key)]


def pick(queues: Iterable[QueueView], now: float, latency_bound_s: float | None) -> str | None:
    """The expert to run next, or None when nothing is queued."""
    ranked = order(queues, now, latency_bound_s)
    return ranked[0] if ranked else None
