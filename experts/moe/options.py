"""Per-request controls of MoE routing, as plain data (no torch: it crosses the Ray actor boundary).

A request may steer an MoE expert: keep experts until their probability reaches ``top_p``,
drop slots below a weight floor (null experts), switch experts off or force them on. The
HTTP layer checks the shape of the options; ``validate`` checks them against a model.
"""

from __future__ import annotations

from dataclasses import dataclass

from experts.moe.spec import MoESpec


@dataclass(frozen=True)
class RoutingOptions:
    """Per-request controls on top of the model's own routing."""

    top_p: float | None = None  # keep the best experts until their probability mass reaches p
    min_weight: float | None = None  # null experts: a slot below this weight is dropped
    disabled: tuple[int, ...] = ()  # experts never chosen
    forced: tuple[int, ...] = ()  # experts always chosen (they take the first slots)
    max_experts: int | None = None  # slots per token (default: the model's top-k); top-p may use fewer

    def validate(self, spec: MoESpec) -> None:
        for name, experts in (("disabled", self.disabled), ("forced", self.forced)):
            bad = [e for e in experts if not 0 <= e < spec.num_experts]
            if bad:
                raise ValueError(f"{name} experts {bad} out of range: the model has experts 0..{spec.num_experts - 1}")
        if set(self.disabled) & set(self.forced):
            raise ValueError(f"experts {sorted(set(self.disabled) & set(self.forced))} are both disabled and forced")
        slots = self.max_experts or spec.top_k
        if len(self.forced) > slots:
            raise ValueError(f"{len(self.forced)} forced experts do not fit in {slots} slots per token")
        if spec.num_experts - len(self.disabled) < slots:
            raise ValueError(f"only {spec.num_experts - len(self.disabled)} experts left for {slots} slots per token")
        if self.top_p is not None and not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")


NO_OPTIONS = RoutingOptions()
