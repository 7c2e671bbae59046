"""Browser fixtures for the console's tests: Debian's Chromium driven by Playwright (sync API), and small helpers.

Chromium comes from ``deploy/ensure_chromium.sh`` (``make test`` runs it). Where it cannot be found the tests skip
and say why, except under ``MOESAIC_REQUIRE_BROWSER=1`` (``.ci/run``), where a missing browser fails them.

Playwright's sync API runs an event loop of its own while a browser is open, so an async fixture (a pool) must be
set up before ``page`` in a test's parameters; ``browser`` is module-scoped for that reason (each module opens
its own, after its pools).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCREENSHOTS = Path(os.environ.get("MOESAIC_SCREENSHOTS", ROOT / "docs" / "images"))
WAIT_MS = 30_000


def _chromium() -> str | None:
    return os.environ.get("MOESAIC_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


def _unavailable(reason: str) -> None:
    if os.environ.get("MOESAIC_REQUIRE_BROWSER") == "1":
        pytest.fail(f"{reason} (MOESAIC_REQUIRE_BROWSER=1: the browser tests must run here)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("playwright is not installed: pip install -e '.[dev]' (make install does)")
    executable = _chromium()
    if executable is None:
        _unavailable("Chromium not found: bash deploy/ensure_chromium.sh installs Debian's chromium (as root)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh tab (its own sessionStorage) that records console errors and uncaught exceptions."""
    context = browser.new_context(viewport={"width": 1360, "height": 900})
    tab = context.new_page()
    tab.problems = []  # type: ignore[attr-defined]
    tab.on("console", lambda message: message.type == "error" and tab.problems.append(message.text))
    tab.on("pageerror", lambda error: tab.problems.append(f"uncaught: {error}"))
    yield tab
    context.close()


def screenshot(page: Any, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"console-{name}.png"), full_page=True)


def ask(page: Any, question: str) -> None:
    page.wait_for_selector("#policy option", state="attached")  # a string predicate would break the CSP
    page.fill("#prompt", question)
    page.click("#send")
    page.wait_for_selector("#calls:not([hidden])", timeout=WAIT_MS * 4)
