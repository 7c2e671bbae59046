"""The skills policy over declared skills (no profiles): skill scores, top-k recruiting, fallback, explanations."""

from __future__ import annotations

import pytest

from experts.config._pool_spec import PoolSpec
from router import NoExpertAvailable, SkillRouter


@pytest.fixture()
def router(default_pool_spec: PoolSpec) -> SkillRouter:
    return SkillRouter(default_pool_spec)


def test_query_skills_with_evidence(router: SkillRouter) -> None:
    estimate = router.understand("Write a Python function that reverses a list")
    assert estimate.top() == "code"
    assert "python" in estimate.evidence["code"]
    assert abs(sum(estimate.scores.values()) - 1.0) < 1e-9


def test_arithmetic_counts_as_math(router: SkillRouter) -> None:
    decision = router.recruit(router.understand("What is 17 * 23?"))
    assert decision.experts[0] == "math"
    assert "<arithmetic expression>" in decision.evidence["math"]


def test_top_k_and_explanations(router: SkillRouter) -> None:
    decision = router.recruit(router.understand("Write a short poem about the sea"), k=2)
    assert decision.k == 2 and decision.experts[0] == "writer"
    assert decision.aggregator == "conductor"
    chosen = [s for s in decision.scores if s.chosen]
    assert [s.name for s in chosen] == decision.experts
    assert all(s.reason.startswith("chosen") for s in chosen)
    assert all(s.reason.startswith("not chosen") for s in decision.scores if not s.chosen)
    assert "conductor" not in {s.name for s in decision.scores}  # not routable
    assert "writing" in decision.explain()


def test_generalist_fallback_without_evidence(router: SkillRouter) -> None:
    decision = router.recruit(router.understand("zxqv blorp"), k=2)
    assert decision.fallback and decision.experts == ["generalist"] and decision.k == 1
    assert decision.aggregator is None
    assert "fallback (the generalist)" in decision.scores[0].reason


def test_irrelevant_experts_do_not_fill_k(router: SkillRouter) -> None:
    decision = router.recruit(router.understand("solve 17 + 25"), k=4)
    assert decision.experts == ["math", "generalist"] and decision.k == 2
    assert all(
        s.reason == "not chosen: declares none of the skills the query needs" for s in decision.scores if not s.chosen
    )


def test_unhealthy_experts_are_skipped(router: SkillRouter) -> None:
    decision = router.recruit(router.understand("solve 2 + 2"), healthy={"coder", "writer", "generalist"}, k=2)
    assert decision.experts == ["generalist"] and not decision.fallback
    assert [s.reason for s in decision.scores if s.name == "math"] == ["not chosen: unhealthy"]
    decision = router.recruit(router.understand("solve 2 + 2"), healthy={"coder", "writer"}, k=2)
    assert decision.fallback and decision.experts == ["coder"]  # first in the pool when no generalist is up
    with pytest.raises(NoExpertAvailable):
        router.recruit(router.understand("solve 2 + 2"), healthy=set())
