"""Which engine should run local experts here? Our continuous engine against vLLM's, on the same model and cores.

Both engines load the embedded SmolLM2-135M (the directory ``moesaic prepare`` writes) in processes of their own
(``bench/engine_worker.py``: this venv for ours, the engine environment for vLLM's) and are then driven in turn,
interleaved round by round, so the machine's drift hits both alike: at each concurrency (1, 16, 64 requests at
once) the same prompts, greedy, exactly ``--max-tokens`` tokens per answer, fp32 (``--vllm-dtype bfloat16``:
vLLM in bf16), one CPU thread each. Figures:
tokens/s (generated tokens over the round's wall time, prefill included; the median of the rounds), time to first
token p50/p95 (over every request of every round), and resident memory of the engine's processes after the run.
The ratio column is vLLM over ours. This is what ``engine: auto`` rests on (``experts/config/_engine_choice.py``).

    .venv/bin/python bench/engines.py [--rounds 3] [--max-tokens 32] [--concurrency 1,16,64] [--json]

Needs the engine environment (``make engine-env``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

MODEL = "embedded:smollm2-135m-instruct"
ENGINES = ("native", "vllm")


class Worker:
    """One engine's worker process, driven over stdin/stdout."""

    def __init__(self, kind: str, python: str, directory: str, dtype: str = "float32") -> None:
        env = {"PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
        env |= {"VLLM_CPU_OMP_THREADS_BIND": "nobind", "VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_LOGGING_LEVEL": "WARNING"}
        self.kind = kind
        self.log = tempfile.NamedTemporaryFile("w+", prefix=f"engine-{kind}-", suffix=".log", delete=False)
        self.process = subprocess.Popen(
            [python, str(ROOT / "bench" / "engine_worker.py"), kind, directory, dtype],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
            env=env,
        )
        self.ready = self._read()

    def run(self, concurrency: int, max_tokens: int) -> dict[str, Any]:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps({"concurrency": concurrency, "max_tokens": max_tokens}) + "\n")
        self.process.stdin.flush()
        return self._read()

    def _read(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            self.log.seek(0)
            raise RuntimeError(
                f"the {self.kind} engine's worker exited ({self.process.wait()}):\n{self.log.read()[-3000:]}"
            )
        return dict(json.loads(line))

    def stop(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.write(json.dumps({"stop": True}) + "\n")
            self.process.stdin.close()
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(share * (len(ordered) - 1))))]


def measure(rounds: int, max_tokens: int, levels: list[int], vllm_dtype: str = "float32") -> dict[str, Any]:
    from experts.config._engine_choice import cpu_flags, fast_bf16, find_engine_environment
    from experts.engine.embedded import prepare_model, resolve_model

    environment = find_engine_environment()
    if environment.python is None:
        raise SystemExit(f"no engine environment ({environment.source}): run `make engine-env` first")
    directory = str(prepare_model(resolve_model(MODEL)))
    workers = {"native": Worker("native", sys.executable, directory)}
    workers["vllm"] = Worker("vllm", environment.python, directory, vllm_dtype)
    runs: dict[str, dict[int, list[dict[str, Any]]]] = {kind: {level: [] for level in levels} for kind in ENGINES}
    try:
        for number in range(rounds):
            for level in levels:
                order = ENGINES if number % 2 == 0 else ENGINES[::-1]  # who goes first alternates
                for kind in order:
                    runs[kind][level].append(workers[kind].run(level, max_tokens))
        memory = {kind: runs[kind][levels[-1]][-1]["rss_bytes"] for kind in ENGINES}
    finally:
        for worker in workers.values():
            worker.stop()
    rows = []
    for level in levels:
        row: dict[str, Any] = {"concurrency": level}
        for kind in ENGINES:
            rates = [run["tokens"] / run["seconds"] for run in runs[kind][level]]
            firsts = [value for run in runs[kind][level] for value in run["ttft"]]
            row[kind] = {
                "tokens_per_s": round(statistics.median(rates), 1),
                "ttft_p50_s": round(percentile(firsts, 0.5), 3),
                "ttft_p95_s": round(percentile(firsts, 0.95), 3),
            }
        row["vllm_over_native"] = round(row["vllm"]["tokens_per_s"] / row["native"]["tokens_per_s"], 2)
        rows.append(row)
    flags = cpu_flags()
    return {
        "model": MODEL,
        "max_tokens": max_tokens,
        "rounds": rounds,
        "vllm_dtype": vllm_dtype,
        "cpu_fast_bf16": fast_bf16(flags),
        "load_s": {kind: round(workers[kind].ready["load_s"], 1) for kind in ENGINES},
        "rss_mb": {kind: round(memory[kind] / 2**20) for kind in ENGINES},
        "rows": rows,
        "date": time.strftime("%Y-%m-%d"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--concurrency", default="1,16,64", help="comma-separated requests at once")
    parser.add_argument("--vllm-dtype", default="float32", help="vLLM's dtype (ours runs fp32): float32 or bfloat16")
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON object on the last line")
    args = parser.parse_args()
    levels = [int(part) for part in args.concurrency.split(",")]
    figures = measure(args.rounds, args.max_tokens, levels, args.vllm_dtype)
    print(f"{'at once':>7}  {'ours tok/s':>10}  {'vLLM tok/s':>10}  {'vLLM/ours':>9}  {'TTFT p50/p95 ours':>18}  vLLM")
    for row in figures["rows"]:
        native, vllm = row["native"], row["vllm"]
        print(
            f"{row['concurrency']:>7}  {native['tokens_per_s']:>10}  {vllm['tokens_per_s']:>10}  "
            f"{row['vllm_over_native']:>9}  {native['ttft_p50_s']:>8}/{native['ttft_p95_s']:<8}  "
            f"{vllm['ttft_p50_s']}/{vllm['ttft_p95_s']}"
        )
    print(f"load s: {figures['load_s']}  memory MB: {figures['rss_mb']}  native bf16: {figures['cpu_fast_bf16']}")
    if args.json:
        print(json.dumps(figures))


if __name__ == "__main__":
    main()
