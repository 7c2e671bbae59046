"""The console's ask view marks an escalation: a profiled echo pool (``test_escalation_live``'s) whose two cheap
experts disagree, so the strong one is asked as a second stage, shown in a column of its own.

Its own module: the pool (an async fixture) is set up before this module opens its browser (``tests/browser.py``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from experts.config._pool_spec import load_pool
from experts.runtime._pool import ExpertPool
from orchestrator.pipeline.orchestrator import Orchestrator
from orchestrator.server.api.app import create_app
from tests.browser import ask
from tests.conftest import ServerThread
from tests.test_escalation_live import AGREE, DISAGREE, escalation_pool

pytestmark = [pytest.mark.ray, pytest.mark.browser]


@pytest.fixture(scope="module")
async def pool(ray_session: None, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[ExpertPool]:
    expert_pool = ExpertPool(load_pool(escalation_pool(tmp_path_factory.mktemp("console-escalation"))))
    await expert_pool.start()
    yield expert_pool
    await expert_pool.shutdown()


@pytest.fixture(scope="module")
def server(pool: ExpertPool) -> Iterator[ServerThread]:
    with ServerThread(create_app(orchestrator=Orchestrator(pool))) as running:
        yield running


def ask_routed(page: Any, server: ServerThread, question: str) -> None:
    page.goto(server.url + "/console")
    page.wait_for_selector("#policy option[value='moesaic/escalate']", state="attached")
    page.select_option("#policy", "moesaic")
    assert page.is_disabled("#budget")  # a budget only means something to cost and escalate
    page.select_option("#policy", "moesaic/escalate")
    assert page.is_enabled("#budget") and page.is_enabled("#k")
    ask(page, question)


def test_a_disagreeing_first_stage_is_marked_and_the_second_stage_gets_its_column(
    server: ServerThread, page: Any
) -> None:
    ask_routed(page, server, DISAGREE)
    assert "second stage: strong" in page.inner_text("#decision")
    page.wait_for_selector("#escalation.escalated >> text=escalated to strong")
    stage_two = page.locator("#columns .column[data-stage='2']")
    assert stage_two.get_attribute("data-expert") == "strong" and "stage 2" in stage_two.inner_text()
    assert "The answer is (C)." in stage_two.locator(".answer-text").inner_text()
    assert page.locator("#calls tbody tr").count() == 3  # two cheap experts, then the strong one
    assert "C" in page.inner_text("#final-text")
    assert page.problems == []  # type: ignore[attr-defined]


def test_an_agreeing_first_stage_says_it_kept_its_answer(server: ServerThread, page: Any) -> None:
    ask_routed(page, server, AGREE)
    page.wait_for_selector("#escalation >> text=first stage kept")
    assert page.locator("#columns .column[data-stage='2']").count() == 0
    assert page.locator("#calls tbody tr").count() == 2
