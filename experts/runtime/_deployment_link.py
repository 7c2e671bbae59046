"""``DeploymentLink``: one expert served by a Ray Serve deployment, called through its ``DeploymentHandle``.

The other ``ExpertLink`` beside ``ActorHandle``: the pool's retries, circuit breaker, failover to the next-best
expert and everything above them are the same whichever stands behind an expert. What differs:

* Serve owns the replicas: it starts them (each loads the model in its constructor), routes each call to the least
  busy one, and replaces a replica that dies or fails its health check. So there is nothing to restart here; a call
  that lost its replica fails with ``actor_died`` (transient), and the pool's next try goes to another replica.
* A replica batches whatever every ingress replica sends it: batching stays at the expert.
* Health is asked of every replica (``broadcast``): the expert is ready while one of them is, and the report lists
  the replicas (``/v1/pool`` shows them).
* A deployment that serves several experts (an engine group: personas of one vLLM engine) takes the expert's name
  (``persona``) before every call's arguments.

Runs in: the driver (the Serve ingress replica).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from experts._health import ExpertState, HealthReport, is_ready
from experts.errors import ErrorCode, ExpertCallFailed
from experts.runtime._actor_handle import root_message as _root_message
from experts.types import Completion, GenerationRequest

log = logging.getLogger(__name__)

START_POLL_S = 0.5  # how often start() asks a deployment that has no replica yet


class DeploymentLink:
    """The Serve deployment of one expert: its last health report (over every replica) and the calls to it."""

    def __init__(
        self,
        name: str,
        handle: Any,
        start_timeout_s: float,
        scales_to_zero: bool = False,
        persona: str | None = None,
    ) -> None:
        """``scales_to_zero``: its autoscaling allows no replica (``min_replicas: 0``): routable without one, the
        first call then waits for Serve to start a replica (a cold start, inside the call's timeout). ``persona``:
        the expert's name in a deployment that serves several (an engine group), None for its own deployment."""
        self.name = name
        self.persona = persona
        self.handle = handle  # ray.serve.handle.DeploymentHandle of the expert's deployment
        self.start_timeout_s = start_timeout_s
        self.scales_to_zero = scales_to_zero
        self.report: HealthReport = {"name": name, "state": ExpertState.STARTING, "error": None}
        self.restarts = 0  # replicas Serve replaced are counted by Serve (`serve status`), not here
        self.actor: Any = None  # no single actor: Serve routes each call to one of the replicas

    # -- lifecycle -------------------------------------------------------------------------
    @property
    def restarting(self) -> bool:
        return False  # Serve replaces a lost replica on its own; calls meanwhile go to the others

    @property
    def ready(self) -> bool:
        return is_ready(self.report)

    async def start(self) -> HealthReport:
        """Wait until a replica of the deployment answers its health (it loaded its model), or the start timeout."""
        if self.scales_to_zero:  # no replica is its resting state: read what there is, do not wait for one
            return await self.probe(self.start_timeout_s)
        deadline = time.monotonic() + self.start_timeout_s
        last_error = "no replica answered"
        while time.monotonic() < deadline:
            try:
                report = await self.probe(max(0.1, deadline - time.monotonic()))
            except Exception as error:  # the deployment failed to deploy, or is still being deployed
                last_error = _root_message(error)
                report = self.report
            if is_ready(report) or report.get("state") == ExpertState.FAILED:
                return report
            await asyncio.sleep(START_POLL_S)
        self.report = {
            "name": self.name,
            "state": ExpertState.FAILED,
            "error": f"deployment not ready within {self.start_timeout_s:g} s: {last_error}",
        }
        return self.report

    async def wait_restarted(self, timeout_s: float | None) -> bool:
        return self.ready  # nothing of ours to wait for: the next try goes to a live replica

    async def close(self) -> None:
        """Nothing to stop: the deployment's replicas are Serve's (``serve shutdown`` or a new config stops them)."""

    # -- one try ---------------------------------------------------------------------------
    async def call(self, method: str, *args: Any, timeout_s: float | None = None) -> Any:
        """``replica.<method>(*args)`` on the replica Serve picks, within ``timeout_s``."""
        response = self.handle.options(method_name=method).remote(*self._addressed(args))
        try:
            async with asyncio.timeout(timeout_s):
                return await response
        except TimeoutError:
            response.cancel()  # the replica's batcher drops it if it has not started
            raise self._timed_out(timeout_s) from None
        except asyncio.CancelledError:
            response.cancel()  # the caller went away
            raise
        except Exception as error:
            raise self._failure(error) from error

    async def stream(self, request: GenerationRequest, timeout_s: float | None) -> AsyncIterator[str | Completion]:
        """The replica's stream, each item (the first piece, each next one) within ``timeout_s``."""
        generator = self.handle.options(method_name="stream", stream=True).remote(*self._addressed((request,)))
        finished = False
        try:
            while True:
                try:
                    async with asyncio.timeout(timeout_s):
                        item = await generator.__anext__()
                except StopAsyncIteration:
                    finished = True
                    return
                except TimeoutError:
                    raise self._timed_out(timeout_s, "its next streamed piece") from None
                except asyncio.CancelledError:
                    raise
                except Exception as error:
                    finished = True
                    raise self._failure(error) from error
                yield item
        finally:
            if not finished:
                generator.cancel()

    async def probe(self, timeout_s: float) -> HealthReport:
        """Every replica's health: ready while one is; the replicas listed under ``replicas``."""
        try:
            async with asyncio.timeout(timeout_s):
                answers = await self.handle.broadcast("health", *self._addressed(())).results_async(
                    return_exceptions=True
                )
        except TimeoutError:
            return {**self.report, "probe": "slow"}
        except Exception as error:  # no replica to ask (Serve: DeploymentUnavailableError), or none reachable
            answers = [error]
        reports = [answer for answer in answers if isinstance(answer, dict)]
        if not reports and self.scales_to_zero:  # scaled to zero: still routable, the next call starts a replica
            self.report = {"name": self.name, "state": ExpertState.READY, "error": None, "replicas": []}
            return self.report
        if not reports:  # no replica yet (deploying, or every one replaced): keep the state, say why
            failures = [_root_message(answer) for answer in answers if isinstance(answer, BaseException)]
            reason = failures[0] if failures else "no running replica"
            had_replicas = self.report.get("state") not in (ExpertState.STARTING, None)
            state = ExpertState.UNREACHABLE if had_replicas else ExpertState.STARTING  # not routable either way
            self.report = {**self.report, "state": state, "error": reason, "replicas": []}
            return self.report
        ready = [report for report in reports if is_ready(report)]
        chosen = dict(ready[0] if ready else reports[0])
        chosen["replicas"] = [_replica_summary(report) for report in reports]
        for counter in (
            "requests",
            "batches",
            "queue_depth",
            "failed_batches",
            "dropped",
        ):  # what the expert did, over its replicas
            values = [report.get(counter) for report in reports]
            if all(isinstance(value, int | float) for value in values):
                chosen[counter] = sum(values)  # type: ignore[arg-type]
        self.report = chosen  # type: ignore[assignment]
        return self.report

    def _addressed(self, args: tuple[Any, ...]) -> tuple[Any, ...]:
        """A call's arguments, after the expert's name where the deployment serves several."""
        return args if self.persona is None else (self.persona, *args)

    # -- errors ----------------------------------------------------------------------------
    def _timed_out(self, timeout_s: float | None, what: str = "an answer") -> ExpertCallFailed:
        return ExpertCallFailed(
            f"expert {self.name!r} timed out: no {what} within {timeout_s:g} s (resilience.timeout_s)",
            ErrorCode.EXPERT_TIMEOUT,
        )

    def _failure(self, error: BaseException) -> ExpertCallFailed:
        from ray.exceptions import ActorUnavailableError, RayActorError
        from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError, ReplicaUnavailableError

        reason = _root_message(error)
        if isinstance(error, BackPressureError):
            return ExpertCallFailed(f"expert {self.name!r} is at capacity: {reason}", ErrorCode.RATE_LIMITED)
        if isinstance(error, ActorUnavailableError | DeploymentUnavailableError):
            return ExpertCallFailed(
                f"expert {self.name!r} is unreachable for now: {reason}", ErrorCode.ACTOR_UNAVAILABLE
            )
        if isinstance(error, RayActorError | ReplicaUnavailableError):
            log.warning("expert %s: a replica was lost during a call (%s); Serve replaces it", self.name, reason)
            return ExpertCallFailed(
                f"expert {self.name!r} failed: its replica was lost ({reason})", ErrorCode.ACTOR_DIED
            )
        return ExpertCallFailed(f"expert {self.name!r} failed: {reason}")


def _replica_summary(report: HealthReport) -> dict[str, Any]:
    keys = ("node", "state", "requests", "batches", "largest_batch", "queue_depth", "error")
    return {key: report[key] for key in keys if key in report}  # type: ignore[literal-required]
