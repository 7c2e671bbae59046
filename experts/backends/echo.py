"""``echo`` backend: for overhead benchmarks and fault injection only, never for answers.

It returns the last user message (optionally after a delay), or fails on demand, so
benchmarks can measure the orchestration overhead without a model and tests can make an
expert misbehave on purpose. Options: ``delay_s`` (float), ``fail_load`` (bool),
``fail_generate`` (bool).
"""

from __future__ import annotations

import asyncio
import re

from experts.backends.base import BackendError, DeltaSink
from experts.spec import ExpertSpec
from experts.types import Completion, GenerationRequest, TextDelta, Usage


class EchoBackend:
    """Repeats the last user message word by word; a measuring and fault-injection tool."""

    def __init__(self, spec: ExpertSpec) -> None:
        self.spec = spec

    async def load(self) -> None:
        if self.spec.options.get("fail_load"):
            raise BackendError(f"expert {self.spec.name!r}: echo backend told to fail at load (options.fail_load)")

    def describe(self) -> dict[str, object]:
        return {"backend": "echo", "purpose": "overhead benchmarks and fault injection"}

    async def generate(self, batch: list[GenerationRequest], on_delta: DeltaSink | None = None) -> list[Completion]:
        if self.spec.options.get("fail_generate"):
            raise BackendError(f"expert {self.spec.name!r}: echo backend told to fail (options.fail_generate)")
        delay = float(self.spec.options.get("delay_s", 0.0))
        if delay:
            await asyncio.sleep(delay)
        completions = []
        for index, request in enumerate(batch):
            last_user = next((m.content for m in reversed(request.messages) if m.role == "user"), "")
            words = re.findall(r"\S+\s*", last_user.strip())  # a "token" is a word and the space after it
            limit = request.max_tokens or self.spec.generation.max_tokens
            kept = words[:limit]
            if on_delta is not None:
                for word in kept:
                    on_delta(TextDelta(index, word))
            prompt_tokens = sum(len(m.content.split()) for m in request.messages)
            completions.append(
                Completion(
                    text="".join(kept).rstrip(),
                    finish_reason="length" if len(words) > limit else "stop",
                    usage=Usage(prompt_tokens, len(kept), self.spec.cost_of(prompt_tokens, len(kept)) or 0.0),
                    model="echo",
                    batch_size=len(batch),
                )
            )
        return completions
