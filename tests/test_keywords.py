"""The keyword expert path: self-consistent keywords mapped onto the router's vocabulary."""

from __future__ import annotations

import pytest

from experts.config._pool_spec import parse_pool
from experts.runtime._pool import ExpertPool
from experts.types import Message
from orchestrator.pipeline.orchestrator import Orchestrator
from orchestrator.pipeline.state import PipelineRequest
from router._keywords import KeywordExtractor, parse_keywords

VOCABULARY = ["math", "code", "writing", "general_knowledge"]


def test_parse_keywords() -> None:
    assert parse_keywords("Algebra, linear equations\n- arithmetic; 1. Python!") == [
        "algebra",
        "linear equations",
        "arithmetic",
        "python",
    ]
    assert parse_keywords("") == []


def test_only_keywords_seen_twice_count_and_map_to_the_vocabulary() -> None:
    extractor = KeywordExtractor(VOCABULARY, samples=3, min_count=2)
    result = extractor.combine(["algebra, python", "python, equation", "poetry, equation, python"])
    assert result.keywords == ["equation", "python"]  # algebra and poetry were said once
    assert result.mapping == {"equation": "math", "python": "code"}
    assert result.skills == {"math": 0.5, "code": 0.5}
    assert extractor.nearest_skill("quantum chromodynamics") is None  # nothing near: dropped


def test_requests_are_sampled_with_distinct_seeds() -> None:
    requests = KeywordExtractor(VOCABULARY, samples=4, min_count=2).requests("What is 2 + 2?")
    assert len(requests) == 4 and len({r.seed for r in requests}) == 4
    assert all(r.temperature and r.temperature > 0 for r in requests)
    with pytest.raises(ValueError, match="min_count"):
        KeywordExtractor(VOCABULARY, samples=2, min_count=3)


async def test_a_pool_with_a_keyword_role_routes_on_its_keywords(ray_session: None) -> None:
    # Echo experts (fault injection) repeat the prompt; the keyword prompt holds the question,
    # so the keyword "expert" names the question's words: deterministic, and a real round trip.
    spec = parse_pool(
        {
            "name": "keywords",
            "routing": {"k": 1},
            "roles": {"keywords": "lister"},
            "experts": [
                {
                    "name": "numbers",
                    "backend": "echo",
                    "model": "echo",
                    "skills": ["math"],
                    "resources": {"num_cpus": 0},
                },
                {
                    "name": "prose",
                    "backend": "echo",
                    "model": "echo",
                    "skills": ["writing"],
                    "resources": {"num_cpus": 0},
                },
                {"name": "lister", "backend": "echo", "model": "echo", "routable": False, "resources": {"num_cpus": 0}},
            ],
        },
        "<test>",
    )
    pool = ExpertPool(spec)
    try:
        await pool.start()
        from experts.types import GenerationRequest

        result = await Orchestrator(pool).run(PipelineRequest(GenerationRequest([Message("user", "poem, essay")])))
    finally:
        await pool.shutdown()
    keyword_calls = [call for call in result.calls if call.role == "keywords"]
    assert len(keyword_calls) == 3 and all(call.expert == "lister" for call in keyword_calls)
    assert result.decision.experts == ["prose"]
    assert "<keyword expert>" in result.decision.evidence["writing"]
    assert result.usage.prompt_tokens == sum(call.prompt_tokens for call in result.calls)
