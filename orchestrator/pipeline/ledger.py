"""``CallLedger``: every model call one request has made so far, written as each call ends.

A request's bill normally comes from its result (``PipelineResult.usage``). A request that stops early — the
client hung up, the stream was dropped, a later step failed — has no result, yet the calls that ran cost
tokens and money. The pipeline writes each call's ``CallRecord`` here the moment it ends, and the pieces a
streamed call has written while it still runs; whoever admitted the request settles its rate limits and budget
from ``bill`` however the request ends.

A streamed call cut off before its end has no usage from its model; it is billed as an estimate: the prompt's
estimated tokens plus one token per four characters it wrote, at its expert's price.

Runs in: the driver (the API process), shared by the request's pipeline and its admission.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

from orchestrator.pipeline.state import CallRecord

CHARS_PER_TOKEN = 4  # the estimate used wherever a text's tokens are not counted by its model


@dataclass(frozen=True)
class Bill:
    """What a request's calls came to: tokens (prompt + completion) and dollars; ``estimated`` when a cut-off
    stream had to be estimated."""

    tokens: int
    usd: float
    calls: int
    estimated: bool = False


# dollars per one million tokens (input, output) of an expert, or None when unknown (counted as $0)
PriceLookup = Callable[[str], "tuple[float, float] | None"]


@dataclass
class CallLedger:
    """The calls of one request (``record``) and the text of streamed calls still running (``streamed``)."""

    prompt_tokens: int = 0  # the request's prompt, estimated: what a cut-off call is assumed to have read
    calls: list[CallRecord] = field(default_factory=list)
    _open: dict[str, int] = field(default_factory=dict)  # expert -> characters streamed by its unfinished call

    def record(self, call: CallRecord) -> None:
        """A call ended (answered or failed): its own usage counts, and its streamed text is no longer an estimate."""
        self.calls.append(call)
        self._open.pop(call.expert, None)

    def streamed(self, expert: str, text: str) -> None:
        """A running call of ``expert`` wrote ``text`` (kept as a character count until the call ends)."""
        self._open[expert] = self._open.get(expert, 0) + len(text)

    def bill(self, price_of: PriceLookup | None = None) -> Bill:
        """Every ended call's usage, plus an estimate for each streamed call that never ended."""
        tokens = sum(call.prompt_tokens + call.completion_tokens for call in self.calls)
        usd = sum(call.cost for call in self.calls)
        for expert, characters in self._open.items():
            written = math.ceil(characters / CHARS_PER_TOKEN)
            tokens += self.prompt_tokens + written
            price = price_of(expert) if price_of is not None else None
            if price is not None:
                usd += (self.prompt_tokens * price[0] + written * price[1]) / 1_000_000
        return Bill(tokens, usd, len(self.calls) + len(self._open), estimated=bool(self._open))
