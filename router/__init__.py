"""Router: what skills a query needs and which experts answer it."""

from router.decision import ExpertScore, RoutingDecision
from router.lexical import LexicalSkillScorer, SkillEstimate
from router.recruit import NoExpertAvailable, SkillRouter

__all__ = ["ExpertScore", "LexicalSkillScorer", "NoExpertAvailable", "RoutingDecision", "SkillEstimate", "SkillRouter"]
