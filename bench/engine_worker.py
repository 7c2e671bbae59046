"""One engine under load, for ``bench/engines.py``: our continuous engine or vLLM's, in a process of its own
(and for ``bench/moe_engines.py``: ``moe``, our ``moe`` backend on an MoE checkpoint, against vLLM's).

Started by ``bench/engines.py`` with the interpreter each engine needs (this venv for ``native``, the engine
environment for ``vllm``), it loads the model once, prints ``{"ready": ...}`` and then answers one JSON command
per line on stdin — ``{"concurrency": 16, "max_tokens": 32}`` — with one JSON line: tokens, wall seconds, each
request's time to its first token, and the resident memory of the engine's processes (vLLM runs its engine core in
child processes: they are counted). Both engines get the same prompts (``bench/prompts.py``), greedy decoding,
exactly ``max_tokens`` tokens per answer (end-of-sequence held back until then), fp32 and one CPU thread.
``moe`` runs its static batches: the requests of one command are one batch, as the actor would hand them over.

    python bench/engine_worker.py native|vllm|moe MODEL_DIR [DTYPE]   # DTYPE: vllm's and moe's (float32)
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.prompts import PROMPTS  # noqa: E402


def rss_bytes(pid: int) -> int:
    """Resident bytes of ``pid`` and all its descendants (from /proc)."""
    total, stack, seen = 0, [pid], set()
    while stack:
        current = stack.pop()
        if current in seen:
            continue
        seen.add(current)
        try:
            status = Path(f"/proc/{current}/status").read_text()
            total += next(int(line.split()[1]) * 1024 for line in status.splitlines() if line.startswith("VmRSS"))
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
        except (OSError, StopIteration):
            continue
        stack.extend(int(child) for child in children)
    return total


class Native:
    """Our ``ContinuousEngine`` on the model, one torch thread (as in an expert's actor)."""

    def __init__(self, directory: str) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from experts.engine.continuous import ContinuousEngine

        torch.set_num_threads(1)
        self.tokenizer = AutoTokenizer.from_pretrained(directory)
        model = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32).eval()
        self.engine = ContinuousEngine(model, self.tokenizer, torch.device("cpu"), max_slots=64, max_len=512)

    async def run(self, prompts: list[str], max_tokens: int) -> list[tuple[int, float]]:
        from experts.engine.decoding import SamplingParams

        loop, started = asyncio.get_running_loop(), time.perf_counter()
        firsts: list[float | None] = [None] * len(prompts)
        futures = []
        for i, prompt in enumerate(prompts):
            text = self.tokenizer.apply_chat_template(
                [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
            )
            ids = list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

            def first(_: str, i: int = i) -> None:
                if firsts[i] is None:
                    firsts[i] = time.perf_counter() - started

            params = SamplingParams(max_tokens=max_tokens, min_tokens=max_tokens)
            futures.append(asyncio.wrap_future(self.engine.submit(ids, params, first), loop=loop))
        outputs = await asyncio.gather(*futures)
        return [(len(out.token_ids), firsts[i] or 0.0) for i, out in enumerate(outputs)]

    def close(self) -> None:
        self.engine.close()


class MoE:
    """Our ``moe`` backend (``experts/backends/moe.py``, engine auto) on an MoE checkpoint, one torch thread."""

    def __init__(self, directory: str, dtype: str = "float32") -> None:
        from experts.backends.moe import MoEBackend
        from experts.config._pool_spec import parse_pool

        class Exact(MoEBackend):  # every answer exactly max_tokens long, as vLLM is asked (min_tokens)
            def _params(self, request: Any, output_format: Any, grammar: Any = None) -> Any:
                params = super()._params(request, output_format, grammar)
                params.min_tokens = params.max_tokens
                return params

        resources = {"num_cpus": 0, "torch_threads": 1, "device": "cpu"}
        entry = {"name": "moe", "backend": "moe", "model": directory, "resources": resources}
        spec = parse_pool({"name": "bench", "experts": [{**entry, "options": {"dtype": dtype}}]}, "<bench>")
        self.backend = Exact(spec.experts[0])
        asyncio.get_event_loop().run_until_complete(self.backend.load())

    async def run(self, prompts: list[str], max_tokens: int) -> list[tuple[int, float]]:
        from experts.types import GenerationRequest, Message, TextDelta

        started, firsts = time.perf_counter(), [0.0] * len(prompts)

        def first(delta: TextDelta) -> None:
            firsts[delta.index] = firsts[delta.index] or time.perf_counter() - started

        batch = [GenerationRequest([Message("user", p)], max_tokens=max_tokens, temperature=0.0) for p in prompts]
        done = await self.backend.generate(batch, first)
        return [(answer.usage.completion_tokens, firsts[i]) for i, answer in enumerate(done)]

    def close(self) -> None:
        asyncio.get_event_loop().run_until_complete(self.backend.unload())


class Vllm:
    """vLLM's ``AsyncLLM`` through our engine actor class (in process: no Ray), fp32, one OMP thread."""

    def __init__(self, directory: str, dtype: str = "float32") -> None:
        from experts.vllm.engine_actor import VllmEngineActor

        self.actor = VllmEngineActor({"dtype": dtype, "max_model_len": 512, "max_num_seqs": 64})
        asyncio.get_event_loop().run_until_complete(self.actor.start(directory))

    async def run(self, prompts: list[str], max_tokens: int) -> list[tuple[int, float]]:
        started = time.perf_counter()

        async def one(i: int, prompt: str) -> tuple[int, float]:
            first, tokens = 0.0, 0
            payload = {"request_id": f"b{i}", "messages": [{"role": "user", "content": prompt}]}
            payload.update(max_tokens=max_tokens, min_tokens=max_tokens, temperature=0.0)
            async for item in self.actor.generate(payload):
                if "text" in item and not first:
                    first = time.perf_counter() - started
                tokens = int(item.get("completion_tokens", tokens))
            return tokens, first

        return list(await asyncio.gather(*(one(i, p) for i, p in enumerate(prompts))))

    def close(self) -> None:
        asyncio.get_event_loop().run_until_complete(self.actor.shutdown())


def protocol_stdout() -> Any:
    """The real stdout, kept for the JSON lines; everything else that writes to fd 1 (vLLM, progress bars) goes
    to stderr instead."""
    sys.stdout.flush()
    protocol = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return protocol


def main() -> None:
    kind, directory = sys.argv[1], sys.argv[2]
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("VLLM_NO_USAGE_STATS", "1")
    out = protocol_stdout()
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    started = time.perf_counter()
    dtype = sys.argv[3] if len(sys.argv) > 3 else "float32"
    others: dict[str, type[Vllm | MoE]] = {"vllm": Vllm, "moe": MoE}
    engine: Native | Vllm | MoE = Native(directory) if kind == "native" else others[kind](directory, dtype)
    loop.run_until_complete(engine.run(PROMPTS[:2], 4))  # warm-up
    print(json.dumps({"ready": True, "load_s": time.perf_counter() - started}), file=out, flush=True)
    for line in sys.stdin:
        command = json.loads(line)
        if command.get("stop"):
            break
        prompts = [PROMPTS[i % len(PROMPTS)] for i in range(int(command["concurrency"]))]
        begun = time.perf_counter()
        results = loop.run_until_complete(engine.run(prompts, int(command["max_tokens"])))
        wall = time.perf_counter() - begun
        figures = {"tokens": sum(t for t, _ in results), "seconds": wall, "ttft": [f for _, f in results]}
        print(json.dumps({**figures, "rss_bytes": rss_bytes(os.getpid())}), file=out, flush=True)
    engine.close()


if __name__ == "__main__":
    main()
