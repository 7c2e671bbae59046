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


class PlanScore(BaseModel):
    """One plan the cost optimiser weighed for a query (``router/_plans.py``)."""

    experts: list[str] = Field(description="asked first (all of them, unless the plan escalates)")
    then: list[str] = Field(default_factory=list, description="asked only if the first stage does not settle it")
    kind: str = Field(description="single | vote | escalate")
    estimated_accuracy: float
    expected_cost: float = Field(description="expected cost, the second stage weighted by its chance")
    escalation_chance: float = 0.0
    value: float = Field(description="estimated accuracy - lambda x expected cost")
    chosen: bool = False
    reason: str = ""


class Escalation(BaseModel):
    """A second stage: who, when it is asked, and (once the first stage answered) what happened."""

    then: list[str] = Field(description="the second stage's experts")
    threshold: float = Field(0.0, description="the first stage's mean competence needed to stop when it agrees")
    escalated: bool | None = Field(None, description="null until the first stage has answered")
    reason: str = ""


class RoutingDecision(BaseModel):
    """The router's answer for one query."""

    policy: str = "skills"  # the declared-skills router (no profiles) decides by the skills policy
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
    plans: list[PlanScore] = Field(default_factory=list, description="cost policy: every plan weighed, best first")
    cost_lambda: float | None = Field(None, description="cost policy: the penalty per unit of expected cost")
    budget: float | None = Field(None, description="mean-cost budget, x the best single expert's cost")
    escalation: Escalation | None = Field(None, description="a second stage after the first experts answer")
    elapsed_ms: float = 0.0

    def explain(self) -> str:
        """A few human lines: what the query needs and who answers it."""
        needs = ", ".join(f"{skill} {need:.2f}" for skill, need in self.skills.items()) or "no skill evidence"
        lines = [f"skills: {needs}" + (" (generalist fallback)" if self.fallback else "")]
        lines += [f"  {score.name}: {score.reason}" for score in self.scores]
        if self.plans:
            budget = "" if self.budget is None else f", budget {self.budget:g}x the best single expert's cost"
            lines.append(f"plans (lambda {self.cost_lambda:.3g}{budget}):")
            for plan in self.plans:
                then = f", then {' + '.join(plan.then)}" if plan.then else ""
                lines.append(
                    f"  {'*' if plan.chosen else ' '} {' + '.join(plan.experts)}{then}: accuracy "
                    f"{plan.estimated_accuracy:.3f}, cost {plan.expected_cost:.1f}, value {plan.value:.4f}"
                )
        if self.escalation is not None:
            state = {None: "pending", True: "escalated", False: "stopped"}[self.escalation.escalated]
            lines.append(
                f"escalation to {' + '.join(self.escalation.then)}: {state}"
                + (f" ({self.escalation.reason})" if self.escalation.reason else "")
            )
        return "\n".join(lines)
