"""Continuous batching for a Hugging Face causal LM: requests join and leave a running decode loop.

Why: with a static batch, a request that arrives while a batch is decoding waits for the
whole batch to finish, and short answers hold their row until the longest is done. Here a
background thread owns a decode loop over ``max_slots`` slots of a preallocated KV cache
(``experts.engine.slot_cache.SlotCache``). Between two decode steps, waiting requests are prefilled
into free slots and join the next step; a request that is done (EOS, stop string,
max_tokens) leaves at once and its slot is reused. Each decode step is one forward for all
running requests, one new token each, with per-row positions and a 4D attention mask that
covers only the longest running sequence. transformers still computes the forward; the loop,
the cache and the mask are ours. Sampling, stop strings and streaming hold-back are shared
with the static engine (``experts.engine.decoding``).

A forward that raises fails the requests that were in it; the loop goes on with the next.

Thread model: ``submit`` may be called from any thread (the asyncio loop of an actor);
everything that touches the model runs on the engine's thread. ``on_text`` callbacks run on
the engine's thread too, so they must be quick (hand over to an event loop, append to a list).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from concurrent.futures import CancelledError, Future
from dataclasses import dataclass, field, replace
from typing import Any, Callable

import torch

from experts.engine.decoding import EngineOutput, RowDecoder, RowState, SamplingParams
from experts.engine.slot_cache import SlotCache

PieceSink = Callable[[str], None]  # new text of one request, called on the engine's thread

_ATTENTION = ("sdpa", "eager")  # implementations that take our 4D mask as it is


class PromptTooLong(ValueError):
    """A prompt plus its max_tokens does not fit one slot of the engine."""


@dataclass
class EngineStats:
    """Counters of the loop, for health reports, tests and benchmarks."""

    steps: int = 0  # decode forwards
    prefills: int = 0  # prefill forwards
    admitted: int = 0  # requests that got a slot
    joined_running: int = 0  # of those, admitted while other requests were mid-decode
    finished: int = 0
    peak_active: int = 0


@dataclass
class _Request:
    prompt: list[int]
    row: RowState
    on_text: PieceSink | None
    future: Future[EngineOutput]
    submitted: float
    length: int = 0  # positions of its slot that hold its K/V
    next_token: int = 0  # sampled, not yet fed to the model
    peak: int = 0  # most requests it shared a forward with
    error: BaseException | None = None


@dataclass
class _Shared:
    """State guarded by the engine's condition variable."""

    waiting: deque[_Request] = field(default_factory=deque)
    cancelled: set[Future[EngineOutput]] = field(default_factory=set)  # running requests to stop
    closed: bool = False


class ContinuousEngine:
    """A decode loop over ``max_slots`` slots of at most ``max_len`` tokens each (prompt + answer)."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        device: torch.device,
        *,
        max_slots: int = 8,
        max_len: int = 2048,
        prefill_tokens: int = 4096,
        rows: RowDecoder | None = None,
    ) -> None:
        config = model.config
        context = int(getattr(config, "max_position_embeddings", max_len))
        if not 1 <= max_len <= context:
            raise ValueError(f"max_len {max_len} must be between 1 and the model's context window of {context}")
        if max_slots < 1:
            raise ValueError(f"max_slots must be at least 1, not {max_slots}")
        implementation = getattr(config, "_attn_implementation", "eager")
        if implementation not in _ATTENTION:
            raise ValueError(
                f"the continuous engine needs sdpa or eager attention, the model uses {implementation!r}; "
                "load it with attn_implementation='sdpa' or use options.engine: static"
            )
        if any(kind != "full_attention" for kind in getattr(config, "layer_types", None) or []):
            raise ValueError("the continuous engine supports full-attention models only; use options.engine: static")
        self.model, self.tokenizer, self.device = model, tokenizer, device
        self.max_slots, self.max_len, self.prefill_tokens = max_slots, max_len, prefill_tokens
        # ``rows``: the static decoder's of the same model, so both engines share one cache of compiled grammars
        self.rows = rows if rows is not None else RowDecoder(model, tokenizer)
        self.stats = EngineStats()
        head_dim = int(getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads)
        kv_heads = int(getattr(config, "num_key_value_heads", None) or config.num_attention_heads)
        dtype = next(model.parameters()).dtype
        self.cache = SlotCache(config.num_hidden_layers, max_slots, kv_heads, max_len, head_dim, dtype, device)
        self._bool_mask = implementation == "sdpa"
        self._mask_dtype = dtype
        self._positions = torch.arange(max_len, device=device)
        self._active: list[_Request] = []  # slot i holds _active[i]
        self._shared = _Shared()
        self._wake = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="continuous-engine", daemon=True)
        self._thread.start()

    @property
    def context_window(self) -> int:
        """Longest prompt + max_tokens one request may have: a slot's length."""
        return self.max_len

    def submit(
        self, prompt_ids: list[int], params: SamplingParams, on_text: PieceSink | None = None
    ) -> Future[EngineOutput]:
        """Queue one request; the future resolves to its output. Thread-safe.

        Raises ``PromptTooLong`` at once when the prompt plus ``params.max_tokens`` exceeds ``max_len``.
        """
        if not prompt_ids:
            raise ValueError("an empty prompt has nothing to continue; give at least one token")
        if params.max_tokens < 1:
            raise ValueError(f"max_tokens must be at least 1, not {params.max_tokens}")
        if len(prompt_ids) + params.max_tokens > self.max_len:
            raise PromptTooLong(
                f"prompt of {len(prompt_ids)} tokens plus max_tokens {params.max_tokens} exceeds the engine's "
                f"max_len of {self.max_len} tokens; shorten the prompt or max_tokens, or raise options.max_len"
            )
        future: Future[EngineOutput] = Future()
        row = self.rows.start(0, replace(params), len(prompt_ids))  # GrammarError: a format it cannot enforce
        request = _Request(list(prompt_ids), row, on_text, future, 0.0)
        with self._wake:
            if self._shared.closed:
                raise RuntimeError("the engine is closed; create a new one")
            request.submitted = time.perf_counter()
            self._shared.waiting.append(request)
            self._wake.notify()
        return future

    def cancel(self, future: Future[EngineOutput]) -> None:
        """Stop the request behind ``future`` at the next step and free its slot (no-op if done)."""
        if future.cancel() or future.done():  # still waiting (now never admitted), or already answered
            return
        with self._wake:
            self._shared.cancelled.add(future)

    def close(self, timeout: float | None = 10.0) -> None:
        """Stop the loop; requests not finished fail with ``RuntimeError``."""
        with self._wake:
            self._shared.closed = True
            self._wake.notify()
        self._thread.join(timeout)

    @property
    def active(self) -> int:
        return len(self._active)

    @property
    def waiting(self) -> int:
        return len(self._shared.waiting)

    def _run(self) -> None:
        with torch.inference_mode():
            while True:
                with self._wake:
                    while not self._shared.waiting and not self._active and not self._shared.closed:
                        self._wake.wait()
                    if self._shared.closed:
                        break
                    free = self.max_slots - len(self._active)
                    new = [self._shared.waiting.popleft() for _ in range(min(free, len(self._shared.waiting)))]
                admitted = [request for request in new if request.future.set_running_or_notify_cancel()]
                try:
                    self._admit(admitted)
                    if self._active:
                        self._step()
                except Exception as error:  # a failing forward fails its requests, not the engine
                    self._active += [request for request in admitted if request not in self._active]
                    for request in self._active:
                        request.error = request.error or error
                    self._retire()
        self._fail_all(RuntimeError("the engine was closed before this request finished"))

    def _admit(self, new: list[_Request]) -> None:
        """Prefill ``new`` into the next free slots.

        Prompts are grouped by length (shortest first) so that left padding wastes at most
        ~10% of a group's tokens, and a group holds at most ``prefill_tokens`` padded tokens.
        """
        joining = bool(self._active)  # requests are mid-decode: the new ones join a running batch
        new = sorted(new, key=lambda request: len(request.prompt))
        while new:
            width, count, real = len(new[0].prompt), 1, len(new[0].prompt)
            while count < len(new):
                length = len(new[count].prompt)  # the longest so far: the list is sorted
                padded = length * (count + 1)
                if padded > self.prefill_tokens or padded - real - length > 0.1 * padded:
                    break
                width, count, real = length, count + 1, real + length
            group, new = new[:count], new[count:]
            if joining:
                self.stats.joined_running += len(group)
            self.stats.admitted += len(group)
            self._prefill(group, width)

    def _prefill(self, group: list[_Request], width: int) -> None:
        first = len(self._active)
        self._active.extend(group)
        lengths = [len(request.prompt) for request in group]
        input_ids = torch.full((len(group), width), self.rows.pad_id, dtype=torch.long)
        for row, request in enumerate(group):
            input_ids[row, width - lengths[row] :] = torch.tensor(request.prompt, dtype=torch.long)
        pads = torch.tensor([width - length for length in lengths])
        positions = (torch.arange(width)[None, :] - pads[:, None]).clamp(min=0)
        keys = torch.arange(width)
        # causal, and no attending to padding; a padding query sees itself so that no row is all -inf
        visible = (keys[None, None, :] <= keys[None, :, None]) & (keys[None, None, :] >= pads[:, None, None])
        visible |= torch.eye(width, dtype=torch.bool)[None]
        self.cache.plan_prefill(first, lengths, width)
        out = self.model(
            input_ids=input_ids.to(self.device),
            position_ids=positions.to(self.device),
            attention_mask=self._mask(visible[:, None].to(self.device)),
            past_key_values=self.cache,
            use_cache=True,
            logits_to_keep=1,
        )
        self.stats.prefills += 1
        for request, length in zip(group, lengths):
            request.length = length
        self._after_forward(out.logits[:, -1, :], group)

    def _step(self) -> None:
        """One decode forward: every running request feeds its last token and gets the next."""
        active = self._active
        lengths = [request.length for request in active]
        write = torch.tensor(lengths, device=self.device)
        kv_len = max(lengths) + 1
        visible = self._positions[None, :kv_len] <= write[:, None]
        self.cache.plan_decode(write, kv_len)
        out = self.model(
            input_ids=torch.tensor([[request.next_token] for request in active], device=self.device),
            position_ids=write[:, None],
            attention_mask=self._mask(visible[:, None, None, :]),
            past_key_values=self.cache,
            use_cache=True,
        )
        self.stats.steps += 1
        for request in active:
            request.length += 1
        self._after_forward(out.logits[:, -1, :], active)

    def _after_forward(self, logits: torch.Tensor, requests: list[_Request]) -> None:
        """Sample the next token of each of ``requests`` (one row of ``logits`` each), stream, retire the finished."""
        running = len(self._active)
        self.stats.peak_active = max(self.stats.peak_active, running)
        rows = [request.row for request in requests]
        for request, token in zip(requests, self.rows.sample(logits, rows)):
            request.peak = max(request.peak, running)
            request.next_token = token
            piece = self.rows.advance(request.row, token, streaming=request.on_text is not None)
            if piece and request.on_text is not None:
                try:
                    request.on_text(piece)
                except Exception as error:  # a broken sink ends its own request only
                    request.error = error
        self._retire()

    def _retire(self) -> None:
        """Answer finished requests and keep the running ones in slots ``0..n-1``."""
        active, cancelled = self._active, self._shared.cancelled
        done = [
            request.error is not None or request.row.finish_reason is not None or request.future in cancelled
            for request in active
        ]
        if not any(done):
            return
        keep = len(active) - sum(done)
        holes = [slot for slot in range(keep) if done[slot]]
        movers = [slot for slot in range(keep, len(active)) if not done[slot]]
        for hole, mover in zip(holes, movers):  # the last running requests fill the freed slots
            self.cache.move(mover, hole, active[mover].length)
        finished = [request for request, gone in zip(active, done) if gone]
        reordered = active[:keep]
        for hole, mover in zip(holes, movers):
            reordered[hole] = active[mover]
        self._active = reordered
        now = time.perf_counter()
        for request in finished:
            self.stats.finished += 1
            self._resolve(request, now)

    def _resolve(self, request: _Request, now: float) -> None:
        if request.future.done():
            return
        if request.future in self._shared.cancelled:
            with self._wake:
                self._shared.cancelled.discard(request.future)
            request.future.set_exception(CancelledError())
        elif request.error is not None:
            request.future.set_exception(request.error)
        else:
            request.future.set_result(request.row.output(batch_size=request.peak, seconds=now - request.submitted))

    def _fail_all(self, error: Exception) -> None:
        with self._wake:
            pending = self._active + list(self._shared.waiting)
            self._active, self._shared.waiting = [], deque()
        for request in pending:  # running ones were admitted; waiting ones may have been cancelled
            future = request.future
            if not future.done() and (future.running() or future.set_running_or_notify_cancel()):
                future.set_exception(error)

    def _mask(self, visible: torch.Tensor) -> torch.Tensor:
        """sdpa takes the boolean mask as it is; eager adds it to the scores, so it needs 0 / -inf."""
        if self._bool_mask:
            return visible
        additive = torch.zeros(visible.shape, dtype=self._mask_dtype, device=visible.device)
        return additive.masked_fill_(~visible, torch.finfo(self._mask_dtype).min)
