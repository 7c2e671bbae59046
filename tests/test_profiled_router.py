"""The live router over measured profiles: pool file -> profiles -> decisions, CLI and HTTP."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import openai
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from experts.config._pool_spec import load_pool
from experts.runtime._pool import ExpertPool
from orchestrator.cli.main import app as cli
from orchestrator.pipeline.orchestrator import Orchestrator
from orchestrator.server.api.app import create_app
from router import RouterSetupError, build_router
from router._profiled import ProfiledRouter
from router._profiles import build_profiles
from router._store import ProfileStore, export_json
from router.offline._outcomes import load_outcomes
from tests.conftest import ServerThread

MATH = [
    "solve the equation {n} x plus {m} equals zero",
    "compute the integral of x to the power {n}",
    "what is the derivative of {n} x squared",
    "find the sum of {n} and {m} then multiply",
]
WRITING = [
    "write a short poem about the {w} at night",
    "rewrite this paragraph about {w} in a formal tone",
    "draft a friendly email about the {w}",
    "write a story about a {w} and a dragon",
]
WORDS = ["sea", "forest", "city", "garden", "mountain", "river"]


def outcome_frame() -> pd.DataFrame:
    rows = []
    for n in range(12):
        for template in MATH:
            rows.append(
                {
                    "question": template.format(n=n, m=n + 3),
                    "category": "math",
                    "numbers|correct": n % 6 != 0,
                    "words|correct": n % 4 == 0,
                }
            )
        for template in WRITING:
            rows.append(
                {
                    "question": template.format(w=WORDS[n % 6]) + f" number {n}",
                    "category": "writing",
                    "numbers|correct": n % 4 == 0,
                    "words|correct": n % 6 != 0,
                }
            )
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def profiled_pool_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("profiled")
    outcomes = folder / "outcomes.csv"
    outcome_frame().to_csv(outcomes, index=False)
    export_json(build_profiles(load_outcomes(outcomes)["all"], pool="measured"), folder / "profiles.json")
    pool = {
        "name": "measured",
        "routing": {"k": None, "max_experts": 2, "target": 0.8, "profiles": {"json": "profiles.json"}},
        "roles": {"aggregator": "judge"},
        "experts": [
            {"name": "numbers", "backend": "echo", "model": "echo", "resources": {"num_cpus": 0}},
            {
                "name": "wordsmith",
                "profile_name": "words",
                "backend": "echo",
                "model": "echo",
                "resources": {"num_cpus": 0},
            },
            {"name": "judge", "backend": "echo", "model": "echo", "routable": False, "resources": {"num_cpus": 0}},
        ],
    }
    path = folder / "pool.yaml"
    path.write_text(yaml.safe_dump(pool))
    return path


@pytest.fixture(scope="module")
def profiled_router(profiled_pool_file: Path) -> ProfiledRouter:
    router = build_router(load_pool(profiled_pool_file))
    assert isinstance(router, ProfiledRouter)
    return router


def test_measured_competence_decides(profiled_router: ProfiledRouter) -> None:
    math = profiled_router.recruit(profiled_router.understand("solve the equation 7 x plus 2 equals zero"), k=1)
    assert math.experts == ["numbers"] and "math" in math.skills
    prose = profiled_router.recruit(profiled_router.understand("write a short poem about the river at night"), k=1)
    assert prose.experts == ["wordsmith"]
    assert prose.scores[0].reason.startswith("chosen") and prose.scores[1].reason.startswith("not chosen")


def test_every_policy_runs_and_explains(profiled_router: ProfiledRouter) -> None:
    estimate = profiled_router.understand("compute the integral of x to the power 4")
    for policy in ("skills", "category", "cost", "cascade"):
        decision = profiled_router.recruit(estimate, policy=policy)
        assert decision.policy == policy and decision.experts
        assert all(score.reason for score in decision.scores)
    category = profiled_router.recruit(estimate, policy="category")
    assert category.experts == ["numbers"]
    assert category.scores[0].reason == "chosen: best measured expert for predicted category 'math'"  # its name
    assert profiled_router.recruit(estimate, healthy={"wordsmith"}).experts == ["wordsmith"]


def test_profiles_that_miss_an_expert_fail_at_start(profiled_pool_file: Path, tmp_path: Path) -> None:
    raw = yaml.safe_load(profiled_pool_file.read_text())
    raw["experts"][1].pop("profile_name")
    raw["routing"]["profiles"]["json"] = str(profiled_pool_file.parent / "profiles.json")
    (tmp_path / "pool.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(RouterSetupError, match="no expert.s. wordsmith; they cover numbers, words"):
        build_router(load_pool(tmp_path / "pool.yaml"))
    raw["routing"]["profiles"]["json"] = "absent.json"
    (tmp_path / "pool.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(RouterSetupError, match="absent.json: cannot read"):
        build_router(load_pool(tmp_path / "pool.yaml"))


def test_profiles_from_redis(profiled_pool_file: Path, tmp_path: Path, redis_url: str) -> None:
    from router._store import import_json

    ProfileStore(redis_url, "measured-live").save(import_json(profiled_pool_file.parent / "profiles.json"))
    raw = yaml.safe_load(profiled_pool_file.read_text())
    raw["routing"]["profiles"] = {"redis": redis_url, "key_space": "measured-live"}
    (tmp_path / "pool.yaml").write_text(yaml.safe_dump(raw))
    router = build_router(load_pool(tmp_path / "pool.yaml"))
    assert router.recruit(router.understand("draft a friendly email about the garden"), k=1).experts == ["wordsmith"]


def test_cli_route(profiled_pool_file: Path) -> None:
    result = CliRunner().invoke(
        cli,
        [
            "route",
            "find the sum of 3 and 9 then multiply",
            "--pool",
            str(profiled_pool_file),
            "--policy",
            "category",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    decision = json.loads(result.stdout)
    assert decision["policy"] == "category" and decision["experts"] == ["numbers"]


@pytest.fixture(scope="module")
async def profiled_server(ray_session: None, profiled_pool_file: Path) -> AsyncIterator[ServerThread]:
    pool = ExpertPool(load_pool(profiled_pool_file))
    await pool.start()
    with ServerThread(create_app(orchestrator=Orchestrator(pool))) as server:
        yield server
    await pool.shutdown()


def test_route_endpoint_and_policy_models(profiled_server: ServerThread) -> None:
    response = httpx.post(
        profiled_server.url + "/v1/route",
        json={"model": "moesaic/category", "query": "write a story about a sea and a dragon"},
    )
    assert response.status_code == 200, response.text
    assert response.json()["decision"]["experts"] == ["wordsmith"]
    client = openai.OpenAI(base_url=profiled_server.url + "/v1", api_key="unused", max_retries=0)
    ids = {model.id for model in client.models.list()}
    assert {"moesaic/skills", "moesaic/category", "moesaic/cost", "moesaic/cascade"} <= ids
    reply = client.chat.completions.create(
        model="moesaic/category", messages=[{"role": "user", "content": "solve the equation 5 x plus 1 equals zero"}]
    )
    assert reply.model_extra["moesaic"]["decision"]["experts"] == ["numbers"]
    assert reply.choices[0].message.content == "solve the equation 5 x plus 1 equals zero"  # echo expert
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="moesaic/oracle", messages=[{"role": "user", "content": "x"}])


def test_route_endpoint_errors(profiled_server: ServerThread) -> None:
    url = profiled_server.url + "/v1/route"
    assert httpx.post(url, content=b"[1]", headers={"content-type": "application/json"}).status_code == 400
    missing = httpx.post(url, json={"model": "moesaic"})
    assert missing.status_code == 400 and "exactly one of 'query' or 'messages'" in missing.json()["error"]["message"]
    assert httpx.post(url, json={"model": "expert/numbers", "query": "x"}).status_code == 404


def test_no_queries_no_estimates(profiled_router: ProfiledRouter) -> None:
    empty = profiled_router.estimator.estimate([])
    assert empty.competence.shape == (0, 2) and empty.ood.shape == (0,)
