"""``echo`` backend: for overhead benchmarks and fault injection only, never for answers.

It returns the last user message word by word (optionally after a delay), or fails on
demand, so benchmarks can measure the orchestration overhead without a model and tests can
make an expert misbehave on purpose. Its ``options`` (all optional) are fault injection:

* ``delay_s``: seconds to wait before answering each batch (a slow expert; timeouts);
* ``piece_delay_s``: seconds between streamed words (a stream that stalls between pieces);
* ``fail_load``: fail at load (the expert never becomes ready);
* ``fail_generate``: fail every batch;
* ``fail_first_n``: fail the first n batches this actor runs, then answer (transient faults);
* ``fail_rate`` with ``seed``: fail each batch with this probability, reproducibly;
* ``error_code``: how a failing batch fails. Without it the backend raises (the whole actor
  call fails, as a crashing model would); with it each request of the batch is answered with
  ``Completion.failed`` carrying this code, as a hosted API reports a 429 (``rate_limited``),
  a 5xx (``upstream_unavailable``) or a prompt that is too long (``context_length_exceeded``);
* ``replies``: scripted answers, ``{regular expression: text}``: when the last user message matches a
  pattern (the first that does), the expert says that text instead of echoing (an expert that answers
  right or wrong on cue, for escalation and aggregation tests).
"""

from __future__ import annotations

import asyncio
import random
import re
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from experts.backends.base import Backend, DeltaSink
from experts.config import ExpertSpec
from experts.errors import BackendError
from experts.types import Completion, GenerationRequest, TextDelta, Usage


class EchoFaults(BaseModel):
    """The echo backend's options: what to do wrong, and when."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    delay_s: Annotated[float, Field(ge=0.0)] = 0.0
    piece_delay_s: Annotated[float, Field(ge=0.0)] = 0.0
    fail_load: bool = False
    fail_generate: bool = False
    fail_first_n: Annotated[int, Field(ge=0)] = 0
    fail_rate: Annotated[float, Field(ge=0.0, le=1.0)] = 0.0
    seed: int | None = None
    error_code: str | None = None
    replies: dict[str, str] = Field(default_factory=dict)

    @field_validator("replies")
    @classmethod
    def _patterns_compile(cls, replies: dict[str, str]) -> dict[str, str]:
        for pattern in replies:
            try:
                re.compile(pattern)
            except re.error as error:
                raise ValueError(f"pattern {pattern!r} is not a regular expression: {error}") from None
        return replies


class EchoBackend(Backend):
    """Repeats the last user message word by word; a measuring and fault-injection tool."""

    def __init__(self, spec: ExpertSpec) -> None:
        self.spec = spec
        self._faults = _faults_of(spec)
        self._faults_spec = spec
        self._rng = random.Random(self._faults.seed)
        self.batches_run = 0  # batches asked of this actor's backend, failed ones included

    @property
    def faults(self) -> EchoFaults:
        """The options of the current ``spec`` (tests swap the spec to heal a failing expert)."""
        if self._faults_spec is not self.spec:
            self._faults, self._faults_spec = _faults_of(self.spec), self.spec
        return self._faults

    async def load(self) -> None:
        if self.faults.fail_load:
            raise BackendError(f"expert {self.spec.name!r}: echo backend told to fail at load (options.fail_load)")

    def describe(self) -> dict[str, object]:
        return {
            "backend": "echo",
            "purpose": "overhead benchmarks and fault injection",
            "batches_run": self.batches_run,
        }

    async def generate(self, batch: list[GenerationRequest], on_delta: DeltaSink | None = None) -> list[Completion]:
        self.batches_run += 1
        if self.faults.delay_s:
            await asyncio.sleep(self.faults.delay_s)
        reason = self._injected_failure()
        if reason is not None:
            message = f"EchoFault: expert {self.spec.name!r}: echo backend told to fail ({reason})"
            if self.faults.error_code is None:
                raise BackendError(message)
            return [Completion.failed(message, "echo", self.faults.error_code) for _ in batch]
        return [await self._answer(index, request, len(batch), on_delta) for index, request in enumerate(batch)]

    def _injected_failure(self) -> str | None:
        faults = self.faults
        if faults.fail_generate:
            return "options.fail_generate"
        if self.batches_run <= faults.fail_first_n:
            return f"options.fail_first_n: batch {self.batches_run} of the first {faults.fail_first_n}"
        if faults.fail_rate and self._rng.random() < faults.fail_rate:
            return f"options.fail_rate {faults.fail_rate:g}"
        return None

    async def _answer(
        self, index: int, request: GenerationRequest, batch_size: int, on_delta: DeltaSink | None
    ) -> Completion:
        last_user = next((m.content for m in reversed(request.messages) if m.role == "user"), "")
        scripted = next((text for pattern, text in self.faults.replies.items() if re.search(pattern, last_user)), None)
        words = re.findall(
            r"\S+\s*", (last_user if scripted is None else scripted).strip()
        )  # a "token" is a word and the space after it
        limit = request.max_tokens or self.spec.generation.max_tokens
        kept = words[:limit]
        if on_delta is not None:
            for position, word in enumerate(kept):
                if position and self.faults.piece_delay_s:
                    await asyncio.sleep(self.faults.piece_delay_s)
                on_delta(TextDelta(index, word))
        prompt_tokens = sum(len(m.content.split()) for m in request.messages)
        return Completion(
            text="".join(kept).rstrip(),
            finish_reason="length" if len(words) > limit else "stop",
            usage=Usage(prompt_tokens, len(kept), self.spec.cost_of(prompt_tokens, len(kept)) or 0.0),
            model="echo",
            batch_size=batch_size,
        )


def _faults_of(spec: ExpertSpec) -> EchoFaults:
    try:
        return EchoFaults.model_validate(spec.options)
    except ValidationError as error:
        problems = "; ".join(f"options.{'.'.join(map(str, p['loc']))}: {p['msg']}" for p in error.errors())
        raise BackendError(f"expert {spec.name!r} (echo backend): {problems}") from None
