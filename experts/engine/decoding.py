"""What both local engines do per request, in one place: sample, detokenise, stop, stream.

``BatchDecoder`` (a static batch, ``experts.engine.static``) and ``ContinuousEngine`` (slots that
requests join and leave, ``experts.engine.continuous``) differ only in how they run the model. Turning
a row of logits into the next token, the token into text, noticing EOS, stop strings and
max_tokens, and deciding how much text is safe to stream are the same for both, so they
live here and both engines call them.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from experts.engine.grammar import Grammars, GrammarSettings, OutputFormat
from experts.types import FinishReason

TextSink = Callable[[int, str], None]  # (row, new text)


@dataclass
class SamplingParams:
    """Per-request decoding settings (already merged with the expert's defaults).

    ``min_tokens`` masks EOS until that many tokens were produced (like transformers'
    ``min_new_tokens``); benchmarks use it so that every request produces the same count.
    """

    max_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    min_tokens: int = 0
    output_format: OutputFormat | None = None  # structured output: a grammar masks every step (``grammar.py``)
    grammar: Any = None  # output_format's compiled grammar, when the caller compiled it already


@dataclass
class EngineOutput:
    """What one request produced.

    ``batch_size`` is the most requests that shared a forward pass with this one (itself
    included); ``seconds`` the time from submission to its last token (continuous engine
    only; the static decoder leaves it 0 and its caller times the whole batch).
    """

    text: str
    token_ids: list[int]
    finish_reason: FinishReason
    prompt_tokens: int
    batch_size: int = 1
    seconds: float = 0.0


@dataclass
class RowState:
    """Decoding state of one request: its tokens and text so far, and why it stopped."""

    index: int
    params: SamplingParams
    prompt_tokens: int
    generator: torch.Generator | None  # None for greedy rows: they never draw
    matcher: Any = None  # the row's grammar matcher when its output must follow a format
    tokens: list[int] = field(default_factory=list)
    text: str = ""
    emitted: int = 0
    finish_reason: FinishReason | None = None

    @classmethod
    def start(cls, index: int, params: SamplingParams, prompt_tokens: int, matcher: Any = None) -> RowState:
        generator = _generator_for(params.seed) if params.temperature > 0.0 else None
        return cls(index, params, prompt_tokens, generator, matcher)

    def output(self, batch_size: int = 1, seconds: float = 0.0) -> EngineOutput:
        return EngineOutput(
            self.text, self.tokens, self.finish_reason or "stop", self.prompt_tokens, batch_size, seconds
        )


class RowDecoder:
    """Logits to tokens, tokens to text, for rows of any engine (the tokenizer and EOS set of one model)."""

    def __init__(self, model: Any, tokenizer: Any, grammar_settings: GrammarSettings | None = None) -> None:
        self.tokenizer = tokenizer
        self.grammar_settings = grammar_settings or GrammarSettings()
        eos = model.generation_config.eos_token_id
        eos_ids = list(eos) if isinstance(eos, (list, tuple)) else [eos]
        if tokenizer.eos_token_id is not None:
            eos_ids.append(tokenizer.eos_token_id)
        self.eos_ids = {int(token) for token in eos_ids if token is not None}
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(self.eos_ids)
        self.pad_id = int(pad)
        self._eos_index = torch.tensor(sorted(self.eos_ids), dtype=torch.long)
        self._vocab_size = int(model.config.vocab_size)
        self._grammars: Grammars | None = None  # built on the first request with an output format
        self._grammars_lock = threading.Lock()  # requests arrive from several threads

    @property
    def grammars(self) -> Grammars:
        """This model's grammar compiler (xgrammar is imported only when a request asks for a format)."""
        with self._grammars_lock:
            if self._grammars is None:
                self._grammars = Grammars(self.tokenizer, self._vocab_size, self.eos_ids, self.grammar_settings)
            return self._grammars

    def output_format(self, response_format: Mapping[str, Any] | None) -> OutputFormat | None:
        """A request's ``response_format`` as an ``OutputFormat``, checked against this model's schema limits
        (``GrammarError`` when it is over one, or cannot be enforced); nothing is compiled yet."""
        settings = self.grammar_settings
        return OutputFormat.of(response_format, settings.limits, settings.setting_prefix)

    def start(self, index: int, params: SamplingParams, prompt_tokens: int) -> RowState:
        """A new row; ``GrammarError`` when its output format cannot be enforced."""
        output_format = params.output_format
        matcher = self.grammars.matcher(output_format, params.grammar) if output_format is not None else None
        return RowState.start(index, params, prompt_tokens, matcher)

    def sample(self, logits: torch.Tensor, rows: list[RowState]) -> list[int]:
        """One next token per row from ``logits`` (rows x vocab): greedy, or seeded top-p sampling."""
        logits = logits.float()
        floored = [i for i, row in enumerate(rows) if len(row.tokens) < row.params.min_tokens]
        if floored:
            eos = self._eos_index.to(logits.device)
            logits[torch.tensor(floored, device=logits.device)[:, None], eos[None, :]] = float("-inf")
        constrained = [(i, row.matcher) for i, row in enumerate(rows) if row.matcher is not None]
        if constrained:
            self.grammars.mask(logits, constrained)
        chosen = logits.argmax(dim=-1).tolist()
        for i, row in enumerate(rows):
            if row.generator is None:
                continue
            probs = torch.softmax(logits[i] / row.params.temperature, dim=-1)
            if row.params.top_p < 1.0:
                sorted_probs, order = probs.sort(descending=True)
                outside = sorted_probs.cumsum(0) - sorted_probs > row.params.top_p
                sorted_probs[outside] = 0.0
                probs = torch.zeros_like(probs).scatter_(0, order, sorted_probs)
            chosen[i] = int(torch.multinomial(probs.cpu(), 1, generator=row.generator).item())
        return chosen

    def advance(self, row: RowState, token: int, streaming: bool) -> str:
        """Add ``token`` to ``row``; set its finish reason if it is done; return the text now safe to stream."""
        refused = row.matcher is not None and not row.matcher.accept_token(token)  # masked out, so never
        if refused or token in self.eos_ids:
            row.finish_reason = "stop"
        else:
            row.tokens.append(token)
            row.text = self.tokenizer.decode(row.tokens, skip_special_tokens=True)
            cut = first_stop(row.text, row.params.stop)
            if cut is not None:
                row.text = row.text[:cut]
                row.finish_reason = "stop"
            elif len(row.tokens) >= row.params.max_tokens:
                row.finish_reason = "length"
        if not streaming:
            return ""
        # Hold back what may still change: a half-decoded character, or the start of a stop string.
        safe = len(row.text) if row.finish_reason else safe_prefix(row.text, row.params.stop)
        if safe <= row.emitted:
            return ""
        piece, row.emitted = row.text[row.emitted : safe], safe
        return piece


def _generator_for(seed: int | None) -> torch.Generator:
    generator = torch.Generator()
    generator.manual_seed(seed if seed is not None else random.getrandbits(63))
    return generator


def first_stop(text: str, stops: list[str]) -> int | None:
    """Where the earliest stop string starts in ``text``, or None."""
    positions = [text.find(stop) for stop in stops if stop]
    found = [position for position in positions if position >= 0]
    return min(found) if found else None


def safe_prefix(text: str, stops: list[str]) -> int:
    """Length of the prefix of ``text`` that no later token can change or cut off."""
    end = len(text)
    while end > 0 and text[end - 1] == "\ufffd":
        end -= 1
    for stop in stops:
        for length in range(min(len(stop) - 1, end), 0, -1):
            if text[:end].endswith(stop[:length]):
                end -= length
                break
    return end
