"""The multi-split summary of bench/router_targets.py: seed lists and per-target aggregation."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parent.parent / "bench" / "router_targets.py"
_spec = importlib.util.spec_from_file_location("router_targets", _PATH)
assert _spec is not None and _spec.loader is not None
router_targets = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(router_targets)


@pytest.mark.parametrize(("text", "seeds"), [("3", [3]), ("0-3", [0, 1, 2, 3]), ("0,4,7", [0, 4, 7])])
def test_seed_lists(text: str, seeds: list[int]) -> None:
    assert router_targets._seeds(text) == seeds


def test_summary_counts_met_splits_and_spread() -> None:
    def row(name: str, value: float, met: bool) -> dict[str, object]:
        return {"name": name, "goal": "g", "value": value, "met": met}

    runs = [
        [row("gain", 0.05, True), row("apgr", 0.60, False)],
        [row("gain", 0.02, False), row("apgr", 0.70, True)],
        [row("gain", 0.04, True), row("apgr", 0.65, False)],
    ]
    gain, apgr = router_targets.summary(runs)
    assert gain["name"] == "gain" and gain["met_splits"] == 2 and gain["splits"] == 3
    assert gain["mean"] == pytest.approx(0.11 / 3) and gain["min"] == 0.02 and gain["max"] == 0.05
    assert apgr["met_splits"] == 1 and apgr["mean"] == pytest.approx(0.65)
