"""Router: what skills a query needs and which experts answer it."""

from router.decision import ExpertScore, RoutingDecision
from router.factory import Router, RouterSetupError, build_router
from router.lexical import LexicalSkillScorer, SkillEstimate
from router.recruit import NoExpertAvailable, PolicyUnavailable, SkillRouter

__all__ = [
    "ExpertScore",
    "LexicalSkillScorer",
    "NoExpertAvailable",
    "PolicyUnavailable",
    "Router",
    "RouterSetupError",
    "RoutingDecision",
    "SkillEstimate",
    "SkillRouter",
    "build_router",
]
