"""The console (``/console``) in a real browser (``tests/browser.py``: Debian's Chromium driven by Playwright).

Real uvicorn servers over a real echo pool (four math experts that repeat the question, and one that always fails,
for the breaker), open and behind an API key. The pool and routing views' screenshots go to docs/images/ (or
``MOESAIC_SCREENSHOTS``), where the README shows them; ``test_console_embedded`` takes the ask view's over the
embedded pool.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from experts.config._pool_spec import parse_pool
from experts.runtime._pool import ExpertPool
from orchestrator.pipeline.orchestrator import Orchestrator
from orchestrator.server.api.app import create_app
from orchestrator.server.service.auth import hash_key, new_key
from orchestrator.server.service.service_config import ServiceConfig
from router.offline._evaluate import EvalOptions, evaluate_pairs, split_tables
from router.offline._outcomes import read_outcomes
from tests.browser import WAIT_MS, ask, screenshot
from tests.conftest import ServerThread

pytestmark = [pytest.mark.ray, pytest.mark.browser]

ROOT = Path(__file__).resolve().parents[1]
ROUTING_DATA = ROOT.parent / "shared" / "data" / "routing" / "mmlu_pro_dev.parquet"
KEY = new_key()


def echo_expert(name: str, skills: list[str], **options: Any) -> dict[str, Any]:
    return {
        "name": name,
        "backend": "echo",
        "model": "echo",
        "skills": skills,
        "options": options,
        "resources": {"num_cpus": 0},
    }


@pytest.fixture(scope="module")
async def echo_pool(ray_session: None) -> AsyncIterator[ExpertPool]:
    spec = parse_pool(
        {
            "name": "console",
            "roles": {"aggregator": "alpha"},
            "resilience": {"retry": {"attempts": 1}, "breaker": {"failures": 2, "cooldown_s": 600}},
            "experts": [
                *(echo_expert(name, ["math"]) for name in ("alpha", "beta", "gamma", "delta")),
                echo_expert("flaky", ["poetry"], fail_generate=True, error_code="server_error"),
            ],
        },
        "<console test pool>",
    )
    pool = ExpertPool(spec)
    await pool.start()
    yield pool
    await pool.shutdown()


@pytest.fixture(scope="module")
def servers(echo_pool: ExpertPool) -> Iterator[tuple[ServerThread, ServerThread]]:
    """The echo pool open (loopback, no keys), and behind an API key."""
    guarded = ServiceConfig.model_validate({"auth": {"mode": "on", "keys": [{"name": "k", "hash": hash_key(KEY)}]}})
    with ServerThread(create_app(orchestrator=Orchestrator(echo_pool))) as open_server:
        with ServerThread(create_app(orchestrator=Orchestrator(echo_pool), service=guarded)) as keyed:
            yield open_server, keyed


def test_the_page_loads_without_console_errors(servers: tuple[ServerThread, ServerThread], page: Any) -> None:
    server, _ = servers
    response = page.goto(server.url + "/console")
    assert response.status == 200
    assert "script-src 'self'" in response.headers["content-security-policy"]
    page.wait_for_selector("#policy option", state="attached")  # a string predicate would break the CSP
    assert page.input_value("#policy") == "every-expert"  # by default each expert answers, side by side
    assert page.is_disabled("#k")
    for tab in ("Pool", "Routing", "Ask"):
        page.click(f"#tabs >> text={tab}")
        assert page.is_visible(f"#view-{tab.lower()}")
    page.click("#tabs >> text=Pool")
    page.wait_for_selector("#pool-table tbody tr[data-expert='alpha']")
    assert page.problems == []  # type: ignore[attr-defined]
    assert page.is_hidden("#banner")


def test_a_question_shows_the_decision_every_experts_column_and_the_answer(
    servers: tuple[ServerThread, ServerThread], page: Any
) -> None:
    server, _ = servers
    page.goto(server.url + "/console")
    page.wait_for_selector("#policy option", state="attached")
    page.select_option("#policy", "moesaic")  # routed by the pool's policy, up to five experts
    page.fill("#k", "5")
    ask(page, "What is 12 * 7?")
    chosen = page.locator("#decision tr.chosen td:first-child").all_inner_texts()
    assert sorted(chosen) == ["alpha", "beta", "delta", "gamma"]  # flaky declares poetry only: not chosen
    assert "math" in page.inner_text("#decision")
    assert "not chosen" in page.inner_text("#decision tr:has-text('flaky')")
    columns = page.locator("#columns .column")
    assert sorted(columns.evaluate_all("nodes => nodes.map(n => n.dataset.expert)")) == sorted(chosen)
    for text in page.locator("#columns .column .answer-text").all_inner_texts():
        assert text == "What is 12 * 7?"  # the echo backend repeats the question
    for call in page.locator("#columns .column .call").all_inner_texts():
        assert "tokens" in call and "$" in call
    assert page.inner_text("#final-text") == "What is 12 * 7?"
    assert page.inner_text("#final-kind") == "consensus short-cut"  # four equal answers: no aggregator call
    assert "cost $" in page.inner_text("#total-cost")
    assert page.locator("#calls tbody tr").count() == 4
    assert page.problems == []  # type: ignore[attr-defined]


def test_a_bad_key_shows_the_401_message(servers: tuple[ServerThread, ServerThread], page: Any) -> None:
    _, keyed = servers
    refusal = httpx.get(keyed.url + "/v1/models", headers={"Authorization": "Bearer wrong-key"})
    assert refusal.status_code == 401
    page.goto(keyed.url + "/console")
    page.fill("#api-key", "wrong-key")
    page.click("#key-form button[type=submit]")
    page.fill("#prompt", "What is 12 * 7?")
    page.click("#send")
    page.wait_for_selector("#banner:not([hidden]) >> text=401")
    banner = page.inner_text("#banner")
    assert refusal.json()["error"]["message"] in banner and "Enter a valid API key" in banner
    assert page.is_hidden("#final")
    page.fill("#api-key", KEY)  # the right key then works, kept for this tab only
    page.click("#key-form button[type=submit]")
    assert page.evaluate("sessionStorage.getItem('moesaic.console.key')") == KEY
    page.wait_for_selector("#policy option", state="attached")
    page.select_option("#policy", "moesaic")  # routed: flaky's breaker is left for its own test
    ask(page, "What is 12 * 7?")
    assert page.is_hidden("#banner")
    assert page.inner_text("#final-text") == "What is 12 * 7?"


def test_the_pool_view_shows_a_breaker_opening(servers: tuple[ServerThread, ServerThread], page: Any) -> None:
    server, _ = servers
    page.goto(server.url + "/console#pool")
    breaker = "#pool-table tr[data-expert='flaky'] td.breaker"
    page.wait_for_selector(f"{breaker} >> text=closed")
    body = {"model": "expert/flaky", "messages": [{"role": "user", "content": "a poem"}]}
    failures = [httpx.post(server.url + "/v1/chat/completions", json=body, timeout=30).status_code for _ in range(2)]
    assert all(status >= 500 for status in failures)
    page.wait_for_selector(f"{breaker} >> text=open", timeout=WAIT_MS)  # the live refresh, no reload
    assert page.get_attribute("#pool-table tr[data-expert='flaky']", "class") == "unhealthy"  # not routed now
    page.wait_for_selector("#pool-table tr[data-expert='flaky'] td.failed-today >> text=2")  # both calls counted
    assert page.inner_text("#pool-table tr[data-expert='alpha'] td.breaker") == "closed"
    screenshot(page, "pool")
    assert page.problems == []  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def outcome_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two thousand real MMLU-Pro questions for seven small open models, as a Parquet file to upload."""
    import pandas as pd

    if not ROUTING_DATA.exists():
        pytest.fail(f"{ROUTING_DATA} is missing: the shared data folder must sit beside the checkout")
    frame = pd.read_parquet(ROUTING_DATA).head(2000)
    path = tmp_path_factory.mktemp("routing") / "mmlu-pro-2000.parquet"
    frame.to_parquet(path)
    return path


def test_the_routing_view_draws_the_frontier_of_an_uploaded_table(
    servers: tuple[ServerThread, ServerThread], page: Any, outcome_file: Path
) -> None:
    server, _ = servers
    page.goto(server.url + "/console#routing")
    page.set_input_files("#table-file", str(outcome_file))
    page.wait_for_selector("#table-file-state >> text=parquet")
    page.fill("#routing-pool", "open-small")
    page.click("#evaluate")
    report = page.wait_for_selector(".report[data-benchmark='all']", timeout=WAIT_MS * 4)
    assert report is not None
    assert page.locator("svg.chart circle.single").count() == 7  # the seven models of open-small, one point each
    assert page.locator("svg.chart circle.policy-point").count() == 4  # one per budget
    # the figures shown are eval-router's: the same computation, run here in-process
    tables = read_outcomes(outcome_file.read_bytes(), "parquet", "open-small", outcome_file.name)
    expected = evaluate_pairs(split_tables(tables, 0.3, 0), EvalOptions(policy="cost"), (0.25, 0.5, 0.75, 1.0))
    router_row = page.inner_text(".report tbody tr:first-child")
    assert f"{expected['all']['accuracy']:.4f}" in router_row
    assert f"{expected['all']['best_single_accuracy']:.4f}" in page.inner_text(".report tbody tr:nth-child(3)")
    screenshot(page, "routing")
    assert page.problems == []  # type: ignore[attr-defined]


def test_a_routing_table_without_costs_gets_the_reason(servers: tuple[ServerThread, ServerThread], page: Any) -> None:
    server, _ = servers
    page.goto(server.url + "/console#routing")
    page.fill("#table-text", "question,a|correct,b|correct\nq1,true,false\nq2,false,true\nq3,true,true\n")
    page.click("#evaluate")
    page.wait_for_selector("#banner:not([hidden]) >> text=400")
    assert "no cost columns" in page.inner_text("#banner")


def test_the_page_files_ship_in_the_package() -> None:
    """The page needs no build step: its files are package data, and the page names them relatively."""
    static = ROOT / "orchestrator" / "server" / "console" / "static"
    modules = {"console.js", "api.js", "dom.js", "ask.js", "pool.js", "routing.js", "chart.js"}
    assert {p.name for p in static.iterdir()} >= {"index.html", "console.css", *modules}
    html = (static / "index.html").read_text()
    assert 'src="console/static/console.js"' in html and 'href="console/static/console.css"' in html
    assert "http://" not in html and "https://" not in html  # nothing fetched from elsewhere
