"""The console's ask view fills each expert's column as the expert writes (``expert_delta`` events), before its
answer lands: two echo experts that stream their words slowly, asked side by side.

Its own module: the pool (an async fixture) is set up before this module opens its browser (``tests/browser.py``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from experts.config._pool_spec import parse_pool
from experts.runtime._pool import ExpertPool
from orchestrator.pipeline.orchestrator import Orchestrator
from orchestrator.server.api.app import create_app
from tests.browser import WAIT_MS
from tests.conftest import ServerThread

pytestmark = [pytest.mark.ray, pytest.mark.browser]
QUESTION = "one two three four five six"


@pytest.fixture(scope="module")
async def pool(ray_session: None) -> AsyncIterator[ExpertPool]:
    slow = {"backend": "echo", "model": "echo", "skills": ["math"], "resources": {"num_cpus": 0}}
    spec = parse_pool(
        {
            "name": "console-streaming",
            "aggregation": {"strategy": "vote"},
            "experts": [
                {"name": "steady", **slow, "options": {"piece_delay_s": 0.4}},
                {"name": "steadier", **slow, "options": {"piece_delay_s": 0.5}},
            ],
        },
        "<console streaming pool>",
    )
    expert_pool = ExpertPool(spec)
    await expert_pool.start()
    yield expert_pool
    await expert_pool.shutdown()


@pytest.fixture(scope="module")
def server(pool: ExpertPool) -> Iterator[ServerThread]:
    with ServerThread(create_app(orchestrator=Orchestrator(pool))) as running:
        yield running


def test_each_column_fills_as_its_expert_writes(server: ServerThread, page: Any) -> None:
    page.goto(server.url + "/console")
    page.wait_for_selector("#policy option", state="attached")
    assert page.input_value("#policy") == "every-expert"
    page.fill("#prompt", QUESTION)
    page.click("#send")
    writing = page.wait_for_selector("#columns .column.writing[data-expert='steady']", timeout=WAIT_MS)
    assert writing is not None
    partial = writing.inner_text()
    assert "one" in partial and QUESTION not in partial  # part of its answer, before the rest is written
    assert page.is_hidden("#final")  # the vote waits for both answers
    page.wait_for_selector("#calls:not([hidden])", timeout=WAIT_MS)
    for text in page.locator("#columns .column .answer-text").all_inner_texts():
        assert text == QUESTION
    assert page.locator("#columns .column.writing").count() == 0
    assert page.problems == []  # type: ignore[attr-defined]
