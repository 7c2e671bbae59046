"""How long ``moesaic serve`` on the default pool takes to be ready, on our engine and on vLLM's, each started alone.

What ``make serve`` does once its virtualenvs exist: the server process, a local Ray, the experts' actors, the
models loaded (the embedded model's dequantised copy cached, as after its first start), until ``GET /readyz``
answers 200. One server at a time (``bench/serve_engines.py`` starts two together, so each there shares the cores with
the other), the engines alternating run by run (who goes first alternates), ``--runs`` times each; the figures are
the median and the worst. Issue 28 asks for at most 30 s.

    .venv/bin/python bench/serve_ready.py [--runs 3] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.serve_engines import ENGINES, Server, pool_file  # noqa: E402

TARGET_S = 30.0


def measure(runs: int) -> dict[str, Any]:
    from experts.config._engine_choice import find_engine_environment
    from experts.engine.embedded import prepare_model, resolve_model

    if find_engine_environment().python is None:
        raise SystemExit("no engine environment: run `make engine-env` first")
    prepare_model(resolve_model("embedded:smollm2-135m-instruct"))  # cached, as after the first start
    folder = Path(tempfile.mkdtemp(prefix="serve-ready-"))
    seconds: dict[str, list[float]] = {engine: [] for engine in ENGINES}
    for number in range(runs):
        for engine in ENGINES if number % 2 == 0 else ENGINES[::-1]:
            server = Server(pool_file(engine, folder), folder / f"{engine}-{number}.log")
            try:
                seconds[engine].append(server.wait_ready())
            finally:
                server.stop()
    figures: dict[str, Any] = {"runs": runs, "target_s": TARGET_S, "date": time.strftime("%Y-%m-%d")}
    for engine in ENGINES:
        figures[engine] = {
            "median_s": round(statistics.median(seconds[engine]), 1),
            "worst_s": round(max(seconds[engine]), 1),
            "each_s": [round(value, 1) for value in seconds[engine]],
        }
    figures["vllm_target_met"] = figures["vllm"]["worst_s"] <= TARGET_S
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON object on the last line")
    args = parser.parse_args()
    figures = measure(args.runs)
    print(f"{'engine':<8} {'median s':>9} {'worst s':>8}  each")
    for engine in ENGINES:
        row = figures[engine]
        print(f"{engine:<8} {row['median_s']:>9} {row['worst_s']:>8}  {row['each_s']}")
    verdict = "met" if figures["vllm_target_met"] else "not met"
    print(f"vLLM ready within {TARGET_S:.0f} s in every run: {verdict}")
    if args.json:
        print(json.dumps(figures))


if __name__ == "__main__":
    main()
