"""``RoutingDecision``: which experts answer a query, and why.

It is returned to users (``moesaic`` field of responses, ``moesaic ask --explain``), so it
is a pydantic model with a stable JSON shape.
"""

from __future__ import annotations

from pydantic import BaseModel, Field


class ExpertScore(BaseModel):
    """One expert's standing for a query."""

    name: str
    score: float = Field(description="sum over skills of query need x declared competence")
    contributions: dict[str, float] = Field(default_factory=dict, description="skill -> need x competence")
    chosen: bool = False
    rank: int = 0
    reason: str = ""


class RoutingDecision(BaseModel):
    """The router's answer for one query."""

    policy: str = "lexical"
    skills: dict[str, float] = Field(default_factory=dict, description="skill -> estimated need (sums to 1)")
    evidence: dict[str, list[str]] = Field(default_factory=dict, description="skill -> words that suggested it")
    k: int
    experts: list[str] = Field(description="chosen experts, best first")
    scores: list[ExpertScore] = Field(default_factory=list, description="every candidate, best first")
    fallback: bool = Field(False, description="no skill evidence: the generalist leads")
    aggregator: str | None = None
    competence: dict[str, float] = Field(
        default_factory=dict, description="chosen expert -> estimated chance it answers correctly (measured profiles)"
    )
    elapsed_ms: float = 0.0

    def explain(self) -> str:
        """A few human lines: what the query needs and who answers it."""
        needs = ", ".join(f"{skill} {need:.2f}" for skill, need in self.skills.items()) or "no skill evidence"
        lines = [f"skills: {needs}" + (" (generalist fallback)" if self.fallback else "")]
        lines += [f"  {score.name}: {score.reason}" for score in self.scores]
        return "\n".join(lines)
