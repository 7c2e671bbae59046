"""``POST /v1/routing/evaluate`` (the console's routing view): eval-router's figures for a table sent over HTTP.

The answer must be the CLI's (``moesaic eval-router --frontier --json``) for the same table and options, in every
format a browser sends (CSV or JSON-lines text, Parquet as base64); every mistake in the table is a 400 naming it.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pandas as pd
import pytest
from typer.testing import CliRunner

from experts.runtime._pool import ExpertPool
from orchestrator.cli.main import app as cli
from orchestrator.pipeline.orchestrator import Orchestrator
from orchestrator.server.api.app import create_app
from orchestrator.server.service.auth import hash_key, new_key
from orchestrator.server.service.service_config import ServiceConfig
from tests.conftest import ServerThread, echo_pool_spec

pytestmark = pytest.mark.ray
DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "routing" / "mmlu_pro_dev.parquet"
MODELS = ["Meta-Llama-3_1-8B-Instruct", "mathstral-7B", "Phi-3-mini-4k-instruct", "gemma-7b"]
KEY = new_key()


@pytest.fixture(scope="module")
def table(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """600 real MMLU-Pro questions, four models: a Parquet file."""
    if not DATA.exists():
        pytest.fail(f"{DATA} is missing: the shared data folder must sit beside the checkout")
    frame = pd.read_parquet(DATA).head(600)
    keep = ["question_id", "question", "options", "answer", "category", "src"]
    frame = frame[keep + [c for c in frame.columns if c.split("|")[0] in MODELS and "|" in c]]
    path = tmp_path_factory.mktemp("routing") / "slice.parquet"
    frame.to_parquet(path)
    return path


@pytest.fixture(scope="module")
async def pool(ray_session: None) -> AsyncIterator[ExpertPool]:
    pool = ExpertPool(echo_pool_spec("routing-eval"))
    await pool.start()
    yield pool
    await pool.shutdown()


@pytest.fixture(scope="module")
def server(pool: ExpertPool) -> Iterator[ServerThread]:
    record = {"name": "k", "hash": hash_key(KEY), "permissions": ["routing.evaluate"]}
    guarded = ServiceConfig.model_validate({"auth": {"mode": "on", "keys": [record]}})
    with ServerThread(create_app(orchestrator=Orchestrator(pool), service=guarded)) as running:
        yield running


def evaluate(server: ServerThread, **body: object) -> httpx.Response:
    headers = {"Authorization": f"Bearer {KEY}"}
    return httpx.post(server.url + "/v1/routing/evaluate", json=body, headers=headers, timeout=120)


def cli_figures(path: Path, *args: str) -> dict[str, object]:
    result = CliRunner().invoke(cli, ["eval-router", "--outcomes", str(path), "--frontier", "--json", *args])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_the_answer_is_eval_routers_for_the_same_table(server: ServerThread, table: Path) -> None:
    parquet = base64.b64encode(table.read_bytes()).decode()
    answer = evaluate(server, table=parquet, format="parquet", name="slice.parquet", policy="cost")
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["object"] == "moesaic.routing_evaluation" and body["table"] == "slice.parquet"
    report = body["benchmarks"]["all"]
    assert report == cli_figures(table, "--policy", "cost")  # one implementation: every figure equal
    assert sorted(p["label"] for p in report["single_models"]) == sorted(MODELS)
    assert [row["budget"] for row in report["frontier"]] == [0.25, 0.5, 0.75, 1.0]
    assert len(report["hull"]) == 101 and report["test_questions"] + report["train_questions"] == 600


def test_pasted_json_lines_and_a_named_pool_give_the_same_figures(server: ServerThread, table: Path) -> None:
    frame = pd.read_parquet(table)
    frame["options"] = frame["options"].map(list)
    text = frame.to_json(orient="records", lines=True)
    pool = "mathstral-7B,Phi-3-mini-4k-instruct"
    answer = evaluate(server, table=text, format="jsonl", pool=pool, policy="skills", budgets=[0.5, 1.0], seed=3)
    assert answer.status_code == 200, answer.text
    report = answer.json()["benchmarks"]["all"]
    args = ("--pool", pool, "--policy", "skills", "--budgets", "0.5,1.0", "--seed", "3")
    assert report == cli_figures(table, *args)
    assert report["experts"] == pool.split(",")


@pytest.mark.parametrize(
    ("body", "param", "says"),
    [
        ({"table": "a,b\n1,2\n"}, "table", "no '<expert>|correct' columns"),
        ({"table": "not base64!", "format": "parquet"}, "table", "base64"),
        ({"table": "question,a|correct\nq,maybe\n"}, "table", "must hold booleans"),
        ({"table": "question,a|correct,b|correct\nq1,true,false\nq2,false,true\n"}, "table", "no cost columns"),
        ({"table": "x", "policy": "loudest"}, "policy", "unknown policy"),
        ({"table": "x", "split": 1.5}, "split", "less than 1"),
        ({"table": "x", "budgets": []}, "budgets", "at least 1"),
        ({"table": "x", "format": "xlsx"}, "format", "'csv', 'jsonl' or 'parquet'"),
        ({"table": "x", "surprise": 1}, "surprise", "Extra inputs"),
    ],
)
def test_a_bad_request_is_a_400_that_names_the_problem(
    server: ServerThread, body: dict[str, object], param: str, says: str
) -> None:
    answer = evaluate(server, **body)
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["param"] == param and says in error["message"], error


def test_an_unknown_pool_and_a_table_too_small_to_split_are_400s(server: ServerThread, table: Path) -> None:
    text = (
        pd.read_parquet(table)
        .head(3)
        .assign(options=lambda f: f["options"].map(list))
        .to_json(orient="records", lines=True)
    )
    unknown = evaluate(server, table=text, format="jsonl", pool="gpt-9")
    assert unknown.status_code == 400 and "no outcome columns for expert(s) gpt-9" in unknown.json()["error"]["message"]
    tiny = evaluate(server, table=text, format="jsonl", split=0.05)
    assert tiny.status_code == 400, tiny.text
    assert "give more questions" in tiny.json()["error"]["message"]


def test_it_is_behind_the_api_keys_and_in_the_openapi_document(server: ServerThread) -> None:
    assert httpx.post(server.url + "/v1/routing/evaluate", json={"table": "x"}).status_code == 401
    document = httpx.get(server.url + "/openapi.json").json()
    operation = document["paths"]["/v1/routing/evaluate"]["post"]
    schema = operation["requestBody"]["content"]["application/json"]["schema"]
    assert {"table", "format", "pool", "policy", "budgets"} <= set(schema["properties"])
    assert "RoutingEvaluation" in json.dumps(operation["responses"]["200"])
