"""MoE, side by side: our ``moe`` backend against vLLM's CPU build, on the same small MoE checkpoint and cores.

The checkpoint is the ``moe`` tests' (``tests/test_moe_backend.py``): a random Qwen3-MoE (hidden 64, 2 layers, 8
experts, top-2) with the embedded model's tokenizer and chat template, written in Hugging Face format, except for
its attention head size: 32 by default where the tests' has 16 (hidden 64 / 4 heads), because vLLM's CPU attention
takes head sizes 32, 64, 80, ... only (``--head-dim 16``: the tests' exact checkpoint; vLLM then fails at its first
forward, and the run says so instead of a vLLM column). Each engine runs in a worker process of its own
(``bench/engine_worker.py``: ``moe`` in this venv, ``vllm`` in the engine environment), one CPU thread each, fp32,
loaded side by side. Then both are pinned to the same one core, every thread (vLLM's three processes, front end,
engine core and model worker, included; ``--no-pin``: any core), and driven in turn, interleaved round by round
(who goes first alternates, so the machine's drift hits both alike): at each concurrency (1 and 16 requests at
once) the same prompts (``bench/prompts.py``), greedy, exactly ``--max-tokens`` tokens per answer. Ours gets the
requests of a round as one static batch (what its actor hands over), vLLM as concurrent requests that its scheduler
batches. Figures: tokens/s (generated tokens over the round's wall time, prefill included; the median of the
rounds), time to first token p50/p95 over every request, resident memory; the ratio is vLLM/ours.

What only ours offers here: per-request routing controls (``moesaic.moe_routing``: ``top_p``, ``min_weight``,
``disabled``, ``forced``, ``max_experts``; ``experts/moe/options.py``), taken per request within one batch. vLLM
routes every request as the checkpoint does: its ``hf_overrides`` (``num_experts_per_tok``, say) hold for the whole
engine, and ``enable_return_routed_experts`` only reports the routing.

    .venv/bin/python bench/moe_engines.py [--rounds 3] [--max-tokens 32] [--concurrency 1,16] [--head-dim 32] [--json]

Needs the engine environment (``make engine-env``: ``.venv-vllm``) and the embedded model (``moesaic prepare``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.engines import Worker, percentile  # noqa: E402

ENGINES = ("moe", "vllm")
TOKENIZER = "embedded:smollm2-135m-instruct"


def write_checkpoint(folder: Path, head_dim: int = 32, hidden: int = 64, layers: int = 2) -> dict[str, Any]:
    """The ``moe`` tests' tiny Qwen3-MoE, saved to ``folder`` with its tokenizer; what it is."""
    import torch
    import transformers as t
    from transformers.utils import logging as hf_logging

    from experts.engine.embedded import prepare_model, resolve_model

    hf_logging.disable_progress_bar()
    tokenizer = t.AutoTokenizer.from_pretrained(prepare_model(resolve_model(TOKENIZER)))
    config = t.Qwen3MoeConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=4,
        num_key_value_heads=2, head_dim=head_dim, intermediate_size=hidden * 3 // 2, moe_intermediate_size=hidden // 2,
        num_experts=8, num_experts_per_tok=2, norm_topk_prob=True, max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )  # fmt: skip
    torch.manual_seed(0)
    model = t.AutoModelForCausalLM.from_config(config).eval()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    facts = dict(family="qwen3_moe", hidden_size=hidden, layers=layers, experts=8, top_k=2, head_dim=head_dim)
    return facts | {"vocab": len(tokenizer), "parameters": sum(p.numel() for p in model.parameters())}


def root_cause(log: str) -> str:
    """The first ``SomethingError: message`` of a worker's log (vLLM's engine dies with several, and its clean-up
    adds more): from vLLM's own ERROR records where there are some."""
    found = [(line, hit) for line in log.splitlines() if (hit := re.search(r"\b(\w+(?:Error|Exception): .+)", line))]
    first = next((hit for line, hit in found if " ERROR " in line), found[0][1] if found else None)
    return first.group(1).strip() if first else log.strip()[-500:]


class Engine(Worker):
    """``bench.engines.Worker``, with a failure to start kept as ``error`` (its root cause) instead of raised."""

    def __init__(self, kind: str, python: str, directory: str, dtype: str) -> None:
        self.error: str | None = None
        try:
            super().__init__(kind, python, directory, dtype)
        except RuntimeError:  # read through a file of our own: the worker's processes share self.log's offset
            self.error = root_cause(Path(self.log.name).read_text(errors="replace"))
            self.ready = {"load_s": None}


def pin(pid: int, core: int) -> None:
    """Every thread of ``pid`` and of its descendants (vLLM's engine core and model worker) onto ``core``."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            os.sched_setaffinity(int(task.name), {core})
            children = (task / "children").read_text().split()
        except OSError:  # the thread ended meanwhile
            continue
        for child in children:
            pin(int(child), core)


def rates(runs: list[dict[str, Any]]) -> dict[str, float]:
    firsts = [value for run in runs for value in run["ttft"]]
    return {
        "tokens_per_s": round(statistics.median(run["tokens"] / run["seconds"] for run in runs), 1),
        "ttft_p50_s": round(percentile(firsts, 0.5), 3),
        "ttft_p95_s": round(percentile(firsts, 0.95), 3),
    }


def measure(
    rounds: int,
    max_tokens: int,
    levels: list[int],
    head_dim: int = 32,
    dtype: str = "float32",
    one_core: bool = True,
    **size: int,
) -> dict[str, Any]:
    from experts.config._engine_choice import find_engine_environment

    environment = find_engine_environment()
    if environment.python is None:
        raise SystemExit(f"no engine environment ({environment.source}): run `make engine-env` first")
    with tempfile.TemporaryDirectory(prefix="moe-engines-") as folder:
        checkpoint = write_checkpoint(Path(folder), head_dim, **size)
        pythons = {"moe": sys.executable, "vllm": environment.python}
        with ThreadPoolExecutor(len(ENGINES)) as pool:  # both load at once, on any core
            starts = {kind: pool.submit(Engine, kind, pythons[kind], folder, dtype) for kind in ENGINES}
            workers = {kind: started.result() for kind, started in starts.items()}
        running = [kind for kind in ENGINES if workers[kind].error is None]
        if workers["moe"].error:
            for kind in running:
                workers[kind].stop()
            raise SystemExit(f"our moe backend failed to start: {workers['moe'].error}")
        core = max(os.sched_getaffinity(0)) if one_core else None
        for kind in running if core is not None else ():  # the same core: they take turns, under the same load
            pin(workers[kind].process.pid, core)
        runs: dict[str, dict[int, list[dict[str, Any]]]] = {kind: {level: [] for level in levels} for kind in running}
        try:
            for number in range(rounds):
                for level in levels:
                    for kind in running if number % 2 == 0 else running[::-1]:  # who goes first alternates
                        run = workers[kind].run(level, max_tokens)
                        if run["tokens"] != level * max_tokens:
                            raise RuntimeError(f"{kind} made {run['tokens']} tokens, not {level} x {max_tokens}")
                        runs[kind][level].append(run)
        finally:
            for kind in running:
                workers[kind].stop()
    rows = []
    for level in levels:
        row: dict[str, Any] = {"concurrency": level, **{kind: rates(runs[kind][level]) for kind in running}}
        if "vllm" in row:
            row["vllm_over_moe"] = round(row["vllm"]["tokens_per_s"] / row["moe"]["tokens_per_s"], 2)
        rows.append(row)
    load = {kind: workers[kind].ready["load_s"] for kind in ENGINES}
    return {
        "checkpoint": checkpoint,
        "max_tokens": max_tokens,
        "rounds": rounds,
        "dtype": dtype,
        "threads": 1,
        "core": "any" if core is None else core,
        "vllm_error": workers["vllm"].error,
        "load_s": {kind: None if seconds is None else round(seconds, 1) for kind, seconds in load.items()},
        "rss_mb": {kind: round(runs[kind][levels[-1]][-1]["rss_bytes"] / 2**20) for kind in running},
        "rows": rows,
        "date": time.strftime("%Y-%m-%d"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--concurrency", default="1,16", help="comma-separated requests at once")
    parser.add_argument("--head-dim", type=int, default=32, help="attention head size (16: the tests' checkpoint)")
    parser.add_argument("--hidden", type=int, default=64, help="hidden size (64: the tests')")
    parser.add_argument("--layers", type=int, default=2, help="decoder layers (2: the tests')")
    parser.add_argument("--dtype", default="float32", help="both engines' dtype: float32 or bfloat16")
    parser.add_argument("--no-pin", action="store_true", help="let the engines' processes use every core")
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON object on the last line")
    args = parser.parse_args()
    levels = [int(part) for part in args.concurrency.split(",")]
    size = {"hidden": args.hidden, "layers": args.layers}
    figures = measure(args.rounds, args.max_tokens, levels, args.head_dim, args.dtype, not args.no_pin, **size)
    print(f"checkpoint: {figures['checkpoint']}")
    print(f"{'at once':>7}  {'ours tok/s':>10}  {'vLLM tok/s':>10}  {'vLLM/ours':>9}  {'TTFT p50/p95 ours':>18}  vLLM")
    for row in figures["rows"]:
        ours, vllm = row["moe"], row.get("vllm")
        theirs = f"{vllm['ttft_p50_s']}/{vllm['ttft_p95_s']}" if vllm else "-"
        print(
            f"{row['concurrency']:>7}  {ours['tokens_per_s']:>10}  {vllm['tokens_per_s'] if vllm else '-':>10}  "
            f"{row.get('vllm_over_moe', '-'):>9}  {ours['ttft_p50_s']:>8}/{ours['ttft_p95_s']:<8}  {theirs}"
        )
    print(f"load s (side by side): {figures['load_s']}  memory MB: {figures['rss_mb']}  core: {figures['core']}")
    if figures["vllm_error"]:
        print(f"vLLM could not run this checkpoint: {figures['vllm_error']}")
    if args.json:
        print(json.dumps(figures))


if __name__ == "__main__":
    main()
