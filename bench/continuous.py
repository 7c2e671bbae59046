"""Does continuous batching pay? Decode throughput of the continuous engine against serial and HF generate.

Runs the embedded model in this process (one torch thread, as in an actor) on the same
prompts three ways, in one run:
  cb      - all requests submitted at once to ``ContinuousEngine`` (max_slots = requests)
  serial  - the same engine, one request at a time (submit, wait, next)
  hf      - transformers' ``model.generate`` on the same prompts as one left-padded batch

Fairness: greedy decoding everywhere, and every request produces exactly ``max_tokens``
tokens in every mode: EOS is masked until then (our ``SamplingParams.min_tokens``,
transformers' ``min_new_tokens``, the same logits rule), so all three modes do the same
number of decode steps and emit the same tokens (``outputs_match`` checks it). Each figure
is generated tokens / wall-clock seconds of the whole run, prefill included. A warm-up
request runs first in each mode.

In that fair setting both batched modes run the same matmuls (a decode step is ~80% one
core's ``aten::mm``), so continuous batching cannot beat ``generate`` by much there; it wins
when answers differ in length. The run therefore adds one more, labelled "mixed": the same
prompts with max_tokens of max_tokens/4, /2, x1, x2 in turn. ``generate`` has to decode the
whole batch to the longest, the engine frees each slot when its request is done; both are
credited with the tokens the callers asked for only. And one labelled "natural": no forced
length, each answer ends at its own EOS (or at 8 x max_tokens), as a server sees answers;
both modes are credited with the tokens the answers hold (the same tokens, checked).

    .venv/bin/python bench/continuous.py [--requests 16] [--max-tokens 32] [--threads 1] [--json]

``measure_continuous(...)`` returns the figures as a dict for other benchmarks.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.prompts import PROMPTS  # noqa: E402

MODEL = "embedded:smollm2-135m-instruct"


def measure_continuous(
    requests: int = 16, max_tokens: int = 32, threads: int = 1, model: str = MODEL
) -> dict[str, Any]:
    """Tokens/s of continuous batching, serial decoding and HF generate on ``requests`` prompts."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    from experts.engine.continuous import ContinuousEngine
    from experts.engine.decoding import SamplingParams
    from experts.engine.embedded import prepare_model, resolve_model

    hf_logging.disable_progress_bar()
    torch.set_num_threads(threads)
    directory = prepare_model(resolve_model(model))
    tokenizer = AutoTokenizer.from_pretrained(directory)
    lm = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32).eval()
    prompts = [_chat_ids(tokenizer, PROMPTS[i % len(PROMPTS)]) for i in range(requests)]
    params = SamplingParams(max_tokens=max_tokens, min_tokens=max_tokens)

    mixed = [SamplingParams(max_tokens=n, min_tokens=n) for n in _mixed_lengths(requests, max_tokens)]

    engine = ContinuousEngine(lm, tokenizer, torch.device("cpu"), max_slots=requests, max_len=512)
    try:
        engine.submit(prompts[0], SamplingParams(max_tokens=4)).result()  # warm-up
        steps_before = engine.stats.steps
        cb, cb_s = _all_at_once(engine, prompts, [params] * requests)
        steps = engine.stats.steps - steps_before

        started = time.perf_counter()
        serial = [engine.submit(ids, params).result().token_ids for ids in prompts]
        serial_s = time.perf_counter() - started

        cb_mixed, cb_mixed_s = _all_at_once(engine, prompts, mixed)
        natural_params = SamplingParams(max_tokens=8 * max_tokens)
        cb_natural, cb_natural_s = _all_at_once(engine, prompts, [natural_params] * requests)
    finally:
        engine.close()

    hf, hf_s = _hf_generate(lm, tokenizer, prompts, max_tokens)
    hf_mixed, hf_mixed_s = _hf_generate(lm, tokenizer, prompts, max(p.max_tokens for p in mixed))
    hf_natural, hf_natural_s = _hf_generate(lm, tokenizer, prompts, 8 * max_tokens, forced=False)
    hf_natural = [_until_eos(row, tokenizer.eos_token_id) for row in hf_natural]
    natural_tokens = sum(len(ids) for ids in cb_natural)
    useful = sum(p.max_tokens for p in mixed)  # what the callers asked for; HF decodes every row to the longest
    produced = requests * max_tokens
    figures = {
        "requests": requests,
        "max_tokens": max_tokens,
        "threads": threads,
        "cb_s": round(cb_s, 3),
        "serial_s": round(serial_s, 3),
        "hf_generate_s": round(hf_s, 3),
        "cb_tokens_per_s_16" if requests == 16 else f"cb_tokens_per_s_{requests}": round(produced / cb_s, 1),
        "serial_tokens_per_s": round(produced / serial_s, 1),
        "hf_generate_tokens_per_s": round(produced / hf_s, 1),
        "cb_vs_serial": round(serial_s / cb_s, 2),
        "cb_vs_hf_generate": round(hf_s / cb_s, 2),
        "cb_decode_steps": steps,
        "outputs_match": sum(a == b == c for a, b, c in zip(cb, serial, hf)) / requests,
        "all_lengths_equal": all(len(ids) == max_tokens for ids in cb + serial + hf),
        "mixed_max_tokens": sorted({p.max_tokens for p in mixed}),
        "mixed_cb_tokens_per_s": round(useful / cb_mixed_s, 1),
        "mixed_hf_generate_tokens_per_s": round(useful / hf_mixed_s, 1),
        "mixed_cb_vs_hf_generate": round(hf_mixed_s / cb_mixed_s, 2),
        "mixed_outputs_match": sum(a == b[: len(a)] for a, b in zip(cb_mixed, hf_mixed)) / requests,
        "natural_lengths": sorted(len(ids) for ids in cb_natural),
        "natural_cb_tokens_per_s": round(natural_tokens / cb_natural_s, 1),
        "natural_hf_generate_tokens_per_s": round(natural_tokens / hf_natural_s, 1),
        "natural_cb_vs_hf_generate": round(hf_natural_s / cb_natural_s, 2),
        "natural_outputs_match": sum(a == b for a, b in zip(cb_natural, hf_natural)) / requests,
    }
    return figures


def _mixed_lengths(requests: int, max_tokens: int) -> list[int]:
    """max_tokens/4, /2, x1, x2 in turn: answers of different lengths, as a server sees them."""
    cycle = [max(1, max_tokens // 4), max(1, max_tokens // 2), max_tokens, 2 * max_tokens]
    return [cycle[i % len(cycle)] for i in range(requests)]


def _all_at_once(engine: Any, prompts: list[list[int]], params: list[Any]) -> tuple[list[list[int]], float]:
    started = time.perf_counter()
    futures = [engine.submit(ids, p) for ids, p in zip(prompts, params)]
    outputs = [future.result().token_ids for future in futures]
    return outputs, time.perf_counter() - started


def _chat_ids(tokenizer: Any, question: str) -> list[int]:
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": question}], tokenize=False, add_generation_prompt=True
    )
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def _until_eos(ids: list[int], eos: int | None) -> list[int]:
    """HF pads a finished row after its EOS; the engine returns the answer without the EOS."""
    return ids[: ids.index(eos)] if eos is not None and eos in ids else ids


def _hf_generate(
    lm: Any, tokenizer: Any, prompts: list[list[int]], max_tokens: int, forced: bool = True
) -> tuple[list[list[int]], float]:
    import torch

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    width = max(len(ids) for ids in prompts)
    input_ids = torch.full((len(prompts), width), pad, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, ids in enumerate(prompts):
        input_ids[row, width - len(ids) :] = torch.tensor(ids)
        mask[row, width - len(ids) :] = 1
    options = {"do_sample": False, "pad_token_id": pad, "temperature": None, "top_p": None, "top_k": None}
    with torch.inference_mode():
        lm.generate(input_ids=input_ids[:1], attention_mask=mask[:1], max_new_tokens=4, **options)  # warm-up
        started = time.perf_counter()
        lengths = {"min_new_tokens": max_tokens} if forced else {}
        out = lm.generate(input_ids=input_ids, attention_mask=mask, max_new_tokens=max_tokens, **lengths, **options)
        seconds = time.perf_counter() - started
    return [row.tolist() for row in out[:, width:]], seconds


def _table(figures: dict[str, Any]) -> str:
    n = figures["requests"]
    cb = figures[f"cb_tokens_per_s_{n}"]
    rows = [
        ("mode", "seconds", "tokens/s", "cb speed-up"),
        (f"continuous, {n} concurrent", figures["cb_s"], cb, "1.00"),
        ("serial, one at a time", figures["serial_s"], figures["serial_tokens_per_s"], figures["cb_vs_serial"]),
        (
            f"HF generate, batch of {n}",
            figures["hf_generate_s"],
            figures["hf_generate_tokens_per_s"],
            figures["cb_vs_hf_generate"],
        ),
    ]
    lines = [f"{a:<28} {b!s:>9} {c!s:>9} {d!s:>12}" for a, b, c, d in rows]
    lines.append(
        f"mixed max_tokens {figures['mixed_max_tokens']}: continuous {figures['mixed_cb_tokens_per_s']} tokens/s, "
        f"HF generate {figures['mixed_hf_generate_tokens_per_s']} (useful tokens), "
        f"cb speed-up {figures['mixed_cb_vs_hf_generate']}"
    )
    lines.append(
        f"natural lengths (own EOS, up to {8 * figures['max_tokens']}): continuous "
        f"{figures['natural_cb_tokens_per_s']} tokens/s, HF generate {figures['natural_hf_generate_tokens_per_s']}, "
        f"cb speed-up {figures['natural_cb_vs_hf_generate']}; same answers: {figures['natural_outputs_match']:.0%}"
    )
    lines.append(
        f"targets: cb >= 4x serial ({'met' if figures['cb_vs_serial'] >= 4 else 'NOT met'}), "
        f"cb >= 2x HF generate ({'met' if figures['cb_vs_hf_generate'] >= 2 else 'NOT met'}); "
        f"identical outputs: {figures['outputs_match']:.0%}"
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON object on the last line")
    args = parser.parse_args()
    figures = measure_continuous(args.requests, args.max_tokens, args.threads)
    print(_table(figures))
    if args.json:
        print(json.dumps(figures))


if __name__ == "__main__":
    main()
