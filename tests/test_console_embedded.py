"""The issue's own check of the console, over the embedded pool ``make serve`` runs: open ``/console``, ask
"What is 12 * 7?", and the four SmolLM2 experts' answers appear side by side with the aggregated one under them.

Its own module: the session's embedded pool (an async fixture) is set up before this module opens its browser
(``tests/browser.py`` says why). The screenshot is the README's picture of the ask view.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.browser import ask, screenshot
from tests.conftest import ServerThread

pytestmark = [pytest.mark.ray, pytest.mark.browser]


@pytest.mark.model
def test_the_embedded_pool_answers_12_times_7_with_four_experts_side_by_side(
    api_server: ServerThread, page: Any
) -> None:
    """The issue's check: make serve's pool, /console, "What is 12 * 7?": four answers, then the aggregated one."""
    page.goto(api_server.url + "/console")
    ask(page, "What is 12 * 7?")
    names = page.locator("#columns .column").evaluate_all("nodes => nodes.map(n => n.dataset.expert)")
    assert sorted(names) == ["coder", "generalist", "math", "writer"]  # the default: every expert answers
    picks = page.locator("#columns .column:has(.badge.pick)").evaluate_all("nodes => nodes.map(n => n.dataset.expert)")
    assert "math" in picks  # and the router's own choice is marked beside them (POST /v1/route)
    assert "not applied" in page.inner_text("#decision h2")
    for text in page.locator("#columns .column .answer-text").all_inner_texts():
        assert text.strip() and text != "waiting for the answer..."
    assert page.inner_text("#final-text").strip()
    assert "cost $" in page.inner_text("#total-cost")
    screenshot(page, "ask")
    assert page.problems == []  # type: ignore[attr-defined]
