"""``EngineGroupReplica``: one replica of the Serve deployment of experts that share one vLLM engine.

Several personas of one model (the default pool's five SmolLM2 experts) run on one vLLM engine, which batches all of
their requests together (``experts.runtime._engines``). With ``serve.layout: experts`` that group is one deployment:
each replica holds one engine (an actor of its own, in the engine environment, placed in the replica's placement
group so it lands on the replica's node with the group's CPUs, GPUs and memory) and one ``ExpertActor`` per persona,
each with its own queue, defaults, health and usage, all feeding that engine. The constructor loads the model, so
Serve routes no call to a replica before it can answer; ``check_health`` makes Serve replace a replica whose engine
died for good or whose personas failed. Scaling the deployment adds engines (model copies), not personas.

Every call names its persona first (``DeploymentLink`` adds it), then takes the arguments ``ExpertActor`` takes.

Runs in: a Serve replica (a Ray actor, in the API server's environment); its engine runs in an actor of its own.
May import: what ``expert_actor`` does, ``experts.vllm.engine_actor`` (to start the engine actor).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator
from typing import Any

from experts._health import ExpertState, HealthReport
from experts.actor.expert_actor import ExpertActor
from experts.types import Completion, GenerationRequest
from experts.vllm.engine_actor import VllmEngineActor

log = logging.getLogger(__name__)

ENGINE_CHECK_S = 10.0  # how long check_health waits for the engine actor to answer


class EngineGroupReplica:
    """One vLLM engine and the personas it serves (see the module docstring)."""

    async def __init__(  # type: ignore[misc]  # Serve awaits it
        self, group: str, settings: dict[str, Any], engine_options: dict[str, Any], personas: list[dict[str, Any]]
    ) -> None:
        """``group``: the deployment's name; ``settings``: the engine's ``EngineSettings``; ``engine_options``: its
        actor's options (``experts.runtime._engines.engine_actor_options``); ``personas``: each expert's spec."""
        import ray
        from ray.util import get_current_placement_group
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        namespace = ray.get_runtime_context().namespace
        self.engine_name = f"moesaic-{group}-{uuid.uuid4().hex[:8]}"  # one engine per replica
        options = {**engine_options, "name": self.engine_name, "namespace": namespace}
        placement = get_current_placement_group()
        if placement is not None:  # the replica's bundle holds the group's resources: the engine takes them
            options["scheduling_strategy"] = PlacementGroupSchedulingStrategy(placement, placement_group_bundle_index=0)
        self.engine = ray.remote(VllmEngineActor).options(**options).remote(settings)
        self.personas = {
            spec["name"]: ExpertActor(spec, load_at_start=True, engine_actor=self.engine_name, namespace=namespace)
            for spec in personas
        }
        reports = await asyncio.gather(*(persona.start() for persona in self.personas.values()))
        failed = {
            report["name"]: report.get("error") for report in reports if report.get("state") == ExpertState.FAILED
        }
        if failed:  # Serve retries the replica, then marks the deployment failed
            ray.kill(self.engine)
            raise RuntimeError(f"engine group {group!r} could not load its model: {failed}")

    def _persona(self, name: str) -> ExpertActor:
        try:
            return self.personas[name]
        except KeyError:
            known = ", ".join(self.personas)
            raise ValueError(f"this engine group serves {known}, not {name!r}") from None

    async def health(self, persona: str) -> HealthReport:
        return await self._persona(persona).health()

    async def generate(self, persona: str, request: GenerationRequest) -> Completion:
        return await self._persona(persona).generate(request)

    async def generate_batch(self, persona: str, requests: list[GenerationRequest]) -> list[Completion | BaseException]:
        return await self._persona(persona).generate_batch(requests)

    async def stream(self, persona: str, request: GenerationRequest) -> AsyncIterator[str | Completion]:
        async for item in self._persona(persona).stream(request):
            yield item

    async def check_health(self) -> None:
        """Serve's periodic check: a replica whose engine is gone (Ray gave up restarting it) or came back without
        its model (Ray restarted it), or whose persona failed, is replaced."""
        failed = [name for name, persona in self.personas.items() if persona.state == ExpertState.FAILED]
        if failed:
            raise RuntimeError(f"expert(s) {', '.join(failed)} failed on this engine")
        try:
            async with asyncio.timeout(ENGINE_CHECK_S):
                facts = await self.engine.describe.remote()
        except TimeoutError:  # busy, not gone: the next check asks again
            log.warning("engine %s did not answer within %g s", self.engine_name, ENGINE_CHECK_S)
            return
        except Exception as error:
            raise RuntimeError(f"the vLLM engine {self.engine_name} is gone: {error}") from error
        if not facts.get("engine_loaded"):
            raise RuntimeError(f"the vLLM engine {self.engine_name} was restarted and holds no model")
