"""Batched decoding for a Hugging Face causal LM: our loop, transformers' forward.

Why our own loop instead of ``model.generate``: each request in a batch keeps its own
max_tokens, temperature, top_p, seed and stop strings, finished rows leave the batch (and
its KV cache) at once, and every row can stream its text as it is produced. Prompts are
left-padded so all rows decode in lock-step; explicit position ids keep padding from
shifting positions.

This is the *static* engine: a batch runs from start to end and nobody joins it. The
``local`` backend uses ``experts.engine.continuous.ContinuousEngine`` by default; the ``moe``
backend, and ``local`` with ``options.engine: static``, use this one. What both engines do
per request (sampling, stop strings, streaming hold-back) is in ``experts.engine.decoding``.
"""

from __future__ import annotations

from typing import Any

import torch

from experts.engine.decoding import EngineOutput, RowDecoder, SamplingParams, TextSink
from experts.engine.grammar import GrammarSettings

__all__ = ["BatchDecoder", "EngineOutput", "SamplingParams", "TextSink"]


class BatchDecoder:
    """Runs a list of tokenised prompts as one batch through ``model``."""

    def __init__(
        self, model: Any, tokenizer: Any, device: torch.device, grammar_settings: GrammarSettings | None = None
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.device = device
        self.rows = RowDecoder(model, tokenizer, grammar_settings)
        self.eos_ids = self.rows.eos_ids
        self.pad_id = self.rows.pad_id

    @property
    def context_window(self) -> int:
        return int(getattr(self.model.config, "max_position_embeddings", 2048))

    @torch.inference_mode()
    def generate(
        self, prompts: list[list[int]], params: list[SamplingParams], on_text: TextSink | None = None
    ) -> list[EngineOutput]:
        """Decode every prompt; ``on_text(index, new_text)`` receives streamed text."""
        rows = [self.rows.start(index, p, len(ids)) for index, (ids, p) in enumerate(zip(prompts, params))]
        input_ids, attention_mask = self._left_pad(prompts)
        positions = (attention_mask.cumsum(-1) - 1).clamp(min=0)
        out = self.model(  # the prefill scores only the last position: the others' logits would go unused
            input_ids=input_ids, attention_mask=attention_mask, position_ids=positions, use_cache=True, logits_to_keep=1
        )
        cache = out.past_key_values
        active = list(rows)
        last_positions = positions[:, -1:]
        while True:
            chosen = self.rows.sample(out.logits[:, -1, :], active)
            for row, token in zip(active, chosen):
                piece = self.rows.advance(row, token, streaming=on_text is not None)
                if piece and on_text is not None:
                    on_text(row.index, piece)
            next_tokens = torch.tensor(chosen, dtype=torch.long, device=self.device)
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
        return [row.output(batch_size=len(rows)) for row in rows]

    def _left_pad(self, prompts: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(len(ids) for ids in prompts)
        input_ids = torch.full((len(prompts), width), self.pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for row, ids in enumerate(prompts):
            input_ids[row, width - len(ids) :] = torch.tensor(ids, dtype=torch.long)
            attention_mask[row, width - len(ids) :] = 1
        return input_ids.to(self.device), attention_mask.to(self.device)
