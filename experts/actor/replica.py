"""``ExpertReplica``: one replica of an expert's Ray Serve deployment.

The same ``ExpertActor`` (backend, batcher, the model's time in memory) in a Serve replica: the constructor loads the
model, so Serve routes no call to a replica before it can answer, and ``check_health`` makes Serve replace a replica
whose model failed. Every ingress replica calls it through the deployment's handle, so its batcher batches what all
of them send. Serve wraps the class into a deployment where the application is built
(``orchestrator/frameworks/serve_app.py``), with the expert's replicas or autoscaling and its resources.

Runs in: a Serve replica (a Ray actor). May import: what ``expert_actor`` does.
"""

from __future__ import annotations

from typing import Any

from experts._health import ExpertState
from experts.actor.expert_actor import ExpertActor


class ExpertReplica(ExpertActor):
    """An ``ExpertActor`` whose model is loaded before Serve sends it a call."""

    async def __init__(self, spec_data: dict[str, Any]) -> None:  # type: ignore[misc]  # Serve awaits it
        super().__init__(spec_data, load_at_start=True, serve_channel=False)
        report = await self.start()
        if report.get("state") == ExpertState.FAILED:  # Serve retries the replica, then marks the deployment failed
            raise RuntimeError(f"expert {self.spec.name!r} could not load its model: {report.get('error')}")

    async def check_health(self) -> None:
        """Serve's periodic check: a replica whose model failed is replaced."""
        if self.state == ExpertState.FAILED:
            raise RuntimeError(f"expert {self.spec.name!r} failed: {self.error}")
