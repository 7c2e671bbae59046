"""Where each expert's per-token price comes from, so spend budgets can name what they cannot count.

An expert's calls are charged against API keys' daily budgets at its price. The price comes from, in order:
the pool file (``price: {input_per_1m, output_per_1m}``), LiteLLM's price map (hosted models LiteLLM knows),
or nothing. A model that runs on our own hardware (``local``, ``moe``, ``echo``) costs $0 per token unless the
pool file sets a price. A hosted model with no price at all is *unpriced*: its calls count $0, so a budget
does not limit them; the service warns at start and ``/v1/models`` says so.

Runs in the driver; the LiteLLM price lookup happens inside the expert's actor (which has LiteLLM imported)
and arrives here through the actor's health report (``price_per_1m``).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any, Mapping

from experts.config import ExpertSpec

HOSTED_BACKENDS = frozenset({"litellm"})


class PriceSource(str, Enum):
    POOL_FILE = "pool_file"
    LITELLM_PRICE_MAP = "litellm_price_map"
    SELF_HOSTED = "self_hosted"  # our own hardware: $0 per token
    NONE = "none"  # a hosted model with no known price: counted as $0


@dataclass(frozen=True)
class Price:
    """Dollars per one million tokens, and where the figure came from (``None``: unknown)."""

    source: PriceSource
    input_per_1m: float | None = None
    output_per_1m: float | None = None

    @property
    def known(self) -> bool:
        return self.source is not PriceSource.NONE


def price_of(spec: ExpertSpec, report: Mapping[str, Any] | None = None) -> Price:
    """The price an expert's calls are charged at; ``report`` is its actor's health report, when there is one."""
    if spec.price is not None:
        return Price(PriceSource.POOL_FILE, spec.price.input_per_1m, spec.price.output_per_1m)
    if spec.backend not in HOSTED_BACKENDS:
        return Price(PriceSource.SELF_HOSTED, 0.0, 0.0)
    looked_up = (report or {}).get("price_per_1m")
    if looked_up is not None:
        input_per_1m, output_per_1m = looked_up
        return Price(PriceSource.LITELLM_PRICE_MAP, float(input_per_1m), float(output_per_1m))
    return Price(PriceSource.NONE)


def unpriced(specs: list[ExpertSpec], reports: Mapping[str, Mapping[str, Any]]) -> list[ExpertSpec]:
    """The experts whose calls no budget can count (hosted, no price in the pool file or LiteLLM's map)."""
    return [spec for spec in specs if not price_of(spec, reports.get(spec.name)).known]


def unpriced_warning(experts: list[ExpertSpec]) -> str:
    """The start-up warning for ``experts`` (unpriced while spend budgets are on)."""
    named = ", ".join(f"{spec.name} ({spec.model})" for spec in experts)
    return (
        f"spend budgets are on, but {len(experts)} expert(s) have no price: {named}. Their calls count $0 "
        "against every budget. Set `price: {input_per_1m: ..., output_per_1m: ...}` on them in the pool file."
    )
