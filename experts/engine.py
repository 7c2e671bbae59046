"""Batched decoding for a Hugging Face causal LM: our loop, transformers' forward.

Why our own loop instead of ``model.generate``: each request in a batch keeps its own
max_tokens, temperature, top_p, seed and stop strings, finished rows leave the batch (and
its KV cache) at once, and every row can stream its text as it is produced. Prompts are
left-padded so all rows decode in lock-step; explicit position ids keep padding from
shifting positions.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from experts.types import FinishReason


@dataclass
class SamplingParams:
    """Per-request decoding settings (already merged with the expert's defaults)."""

    max_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0
    stop: list[str] = field(default_factory=list)
    seed: int | None = None


@dataclass
class EngineOutput:
    """What one row of a batch produced."""

    text: str
    token_ids: list[int]
    finish_reason: FinishReason
    prompt_tokens: int


@dataclass
class _Row:
    """Decoding state of one request while it is in the batch."""

    index: int
    params: SamplingParams
    prompt_tokens: int
    generator: torch.Generator
    tokens: list[int] = field(default_factory=list)
    text: str = ""
    emitted: int = 0
    finish_reason: FinishReason | None = None


TextSink = Callable[[int, str], None]


class BatchDecoder:
    """Runs a list of tokenised prompts as one batch through ``model``."""

    def __init__(self, model: Any, tokenizer: Any, device: torch.device) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.device = device
        eos = model.generation_config.eos_token_id
        eos_ids = eos if isinstance(eos, list) else [eos]
        if tokenizer.eos_token_id is not None:
            eos_ids.append(tokenizer.eos_token_id)
        self.eos_ids = {int(token) for token in eos_ids if token is not None}
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(self.eos_ids)
        self.pad_id = int(pad)

    @property
    def context_window(self) -> int:
        return int(getattr(self.model.config, "max_position_embeddings", 2048))

    @torch.inference_mode()
    def generate(
        self, prompts: list[list[int]], params: list[SamplingParams], on_text: TextSink | None = None
    ) -> list[EngineOutput]:
        """Decode every prompt; ``on_text(index, new_text)`` receives streamed text."""
        rows = [_Row(index, p, len(ids), _generator_for(p.seed)) for index, (ids, p) in enumerate(zip(prompts, params))]
        input_ids, attention_mask = self._left_pad(prompts)
        positions = (attention_mask.cumsum(-1) - 1).clamp(min=0)
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=positions, use_cache=True)
        cache = out.past_key_values
        active = list(rows)
        last_positions = positions[:, -1:]
        while True:
            next_tokens = self._sample(out.logits[:, -1, :], active)
            for row, token in zip(active, next_tokens.tolist()):
                self._advance(row, token, on_text)
            keep = [i for i, row in enumerate(active) if row.finish_reason is None]
            if not keep:
                break
            if len(keep) < len(active):  # finished rows leave the batch and the KV cache
                index = torch.tensor(keep, device=self.device)
                cache.batch_select_indices(index)
                attention_mask = attention_mask[index]
                last_positions = last_positions[index]
                next_tokens = next_tokens[index]
                active = [active[i] for i in keep]
            attention_mask = torch.cat([attention_mask, attention_mask.new_ones((len(active), 1))], dim=1)
            last_positions = last_positions + 1
            out = self.model(
                input_ids=next_tokens[:, None],
                attention_mask=attention_mask,
                position_ids=last_positions,
                past_key_values=cache,
                use_cache=True,
            )
            cache = out.past_key_values
        return [EngineOutput(row.text, row.tokens, row.finish_reason or "stop", row.prompt_tokens) for row in rows]

    def _left_pad(self, prompts: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(len(ids) for ids in prompts)
        input_ids = torch.full((len(prompts), width), self.pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for row, ids in enumerate(prompts):
            input_ids[row, width - len(ids) :] = torch.tensor(ids, dtype=torch.long)
            attention_mask[row, width - len(ids) :] = 1
        return input_ids.to(self.device), attention_mask.to(self.device)

    def _sample(self, logits: torch.Tensor, rows: list[_Row]) -> torch.Tensor:
        logits = logits.float()
        chosen = logits.argmax(dim=-1)
        for i, row in enumerate(rows):
            if row.params.temperature <= 0.0:
                continue
            probs = torch.softmax(logits[i] / row.params.temperature, dim=-1)
            if row.params.top_p < 1.0:
                sorted_probs, order = probs.sort(descending=True)
                outside = sorted_probs.cumsum(0) - sorted_probs > row.params.top_p
                sorted_probs[outside] = 0.0
                probs = torch.zeros_like(probs).scatter_(0, order, sorted_probs)
            chosen[i] = torch.multinomial(probs.cpu(), 1, generator=row.generator).item()
        return chosen

    def _advance(self, row: _Row, token: int, on_text: TextSink | None) -> None:
        if token in self.eos_ids:
            row.finish_reason = "stop"
        else:
            row.tokens.append(token)
            row.text = self.tokenizer.decode(row.tokens, skip_special_tokens=True)
            cut = _first_stop(row.text, row.params.stop)
            if cut is not None:
                row.text = row.text[:cut]
                row.finish_reason = "stop"
            elif len(row.tokens) >= row.params.max_tokens:
                row.finish_reason = "length"
        if on_text is None:
            return
        # Hold back what may still change: a half-decoded character, or the start of a stop string.
        safe = len(row.text) if row.finish_reason else _safe_prefix(row.text, row.params.stop)
        if safe > row.emitted:
            on_text(row.index, row.text[row.emitted : safe])
            row.emitted = safe


def _generator_for(seed: int | None) -> torch.Generator:
    generator = torch.Generator()
    generator.manual_seed(seed if seed is not None else random.getrandbits(63))
    return generator


def _first_stop(text: str, stops: list[str]) -> int | None:
    positions = [text.find(stop) for stop in stops if stop]
    found = [position for position in positions if position >= 0]
    return min(found) if found else None


def _safe_prefix(text: str, stops: list[str]) -> int:
    end = len(text)
    while end > 0 and text[end - 1] == "\ufffd":
        end -= 1
    for stop in stops:
        for length in range(min(len(stop) - 1, end), 0, -1):
            if text[:end].endswith(stop[:length]):
                end -= length
                break
    return end
