"""Router: what skills a query needs and which experts answer it, live on every request.

Runs in: the driver (the API server, the CLI, batch mode). May import: ``experts.config``, ``experts.types``,
``aggregator`` (votes over profiled answers). ``router.offline`` (reading outcome tables, profiling, evaluation) builds
on this package; nothing here imports it.

Public surface (below; the modules are private): the decision (``_decision``), the router a pool file asks for
(``_factory``: ``build_router``), the lexical skill scorer (``_lexical``, ``_keywords``, ``_vocabulary``) and the
recruiter over it (``_recruit``), the profiled router (``_profiled``) with its profiles (``_profiles``, stored by
``_store``), competence estimates (``_competence``), plans (``_plans``), policies (``_policies``), the outcome table
(``_outcome_table``) and the random-mix arithmetic of the cost policy (``_cost_mix``).
"""

from router._competence import CompetenceSettings
from router._decision import Escalation, ExpertScore, RoutingDecision
from router._factory import Router, RouterSetupError, build_router, load_aggregator_choice
from router._keywords import KeywordExtractor
from router._lexical import LexicalSkillScorer, SkillEstimate
from router._outcome_table import OutcomeTable
from router._policies import POLICIES, PolicySettings
from router._profiles import ProfileSet, build_profiles
from router._recruit import NoExpertAvailable, PolicyUnavailable, SkillRouter
from router._store import ProfileStore, ProfileStoreError, export_json

__all__ = [
    "POLICIES",
    "CompetenceSettings",
    "Escalation",
    "ExpertScore",
    "KeywordExtractor",
    "LexicalSkillScorer",
    "NoExpertAvailable",
    "OutcomeTable",
    "PolicySettings",
    "PolicyUnavailable",
    "ProfileSet",
    "ProfileStore",
    "ProfileStoreError",
    "Router",
    "RouterSetupError",
    "RoutingDecision",
    "SkillEstimate",
    "SkillRouter",
    "build_profiles",
    "build_router",
    "export_json",
    "load_aggregator_choice",
]
