"""BFCL's simple, multiple and parallel categories over HTTP on the embedded pool: each expert alone, the vote over
calls at k = 3, and ``escalate``; accuracy by BFCL's own AST checker, and model calls per question.

Questions: ``--per-category`` from each of BFCL v4's ``simple_python``, ``multiple`` and ``parallel`` (a seeded
random sample), each category's sample split in halves: ``train``, where the escalate policy's profiles are measured
(each expert's outcome on every train question), and ``test``, where every figure of the table is measured. Every
request sends the question, the tools as BFCL's own converter writes them for OpenAI-style models
(``convert_to_tool``: ``.`` in a name becomes ``_``), ``tool_choice: "required"`` (these categories always call),
``temperature: 0`` and ``--max-tokens``. An answer's calls are decoded as BFCL's OpenAI handler decodes them and
checked by its ``ast_checker`` (function names, required and allowed parameters, types, accepted values).

Configurations, on the same test questions:

- ``expert/<name>`` for each routable expert of the default pool: one model call per question;
- ``vote k=3``: ``model: moesaic`` with ``moesaic.experts`` naming the three experts most accurate on the train half
  (the default pool's lexical router finds no skill evidence in most of these questions and would send them to
  one or two experts, whatever ``k`` says): their three calls, voted on by the pipeline (competence-weighted, calls
  canonicalised);
- ``escalate``: ``model: moesaic/escalate`` on a second server whose pool carries the profiles measured on the
  train half (the two most competent of the cheaper half first; more experts when they disagree on the calls).

Needs bfcl-eval (its data and AST checker) without its dependencies, which pin numpy 1.26 and pull every provider's
SDK; the checker's module imports BFCL's model table, which imports those SDKs, so that one module is stood in for
by the one entry the checker reads (``underscore_to_dot``, true for OpenAI-style names):

    .venv/bin/pip install --no-deps bfcl-eval==2026.3.23 tree_sitter==0.21.3 tree-sitter-java==0.21.0 \\
        tree-sitter-javascript==0.21.4
    .venv/bin/python bench/bfcl.py [--per-category 40] [--seed 0] [--concurrency 8] [--max-tokens 160] [--json]

The servers are ``moesaic serve`` as ``make serve`` runs it (the personas on vLLM where the engine environment is).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import tempfile
import time
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.serve_engines import Server  # noqa: E402

CATEGORIES = {"simple_python": "BFCL_v4_simple_python.json", "multiple": "BFCL_v4_multiple.json",
              "parallel": "BFCL_v4_parallel.json"}  # fmt: skip
CHECKER_MODEL = "moesaic"  # the name the checker looks up in the stood-in model table


def bfcl() -> types.SimpleNamespace:
    """BFCL's data folder, tool converter and AST checker (see the module docstring for the stand-in)."""
    model_config = types.ModuleType("bfcl_eval.constants.model_config")
    model_config.MODEL_CONFIG_MAPPING = {CHECKER_MODEL: types.SimpleNamespace(underscore_to_dot=True)}  # type: ignore[attr-defined]
    sys.modules["bfcl_eval.constants.model_config"] = model_config
    try:
        import bfcl_eval
        from bfcl_eval.constants.enums import Language, ModelStyle
        from bfcl_eval.constants.type_mappings import GORILLA_TO_OPENAPI
        from bfcl_eval.eval_checker.ast_eval.ast_checker import ast_checker
        from bfcl_eval.model_handler.utils import convert_to_tool
    except ImportError as error:
        raise SystemExit(f"bench/bfcl.py needs bfcl-eval ({error}); install it as the module docstring says") from None
    return types.SimpleNamespace(
        data=Path(bfcl_eval.__file__).parent / "data",
        tools=lambda functions: convert_to_tool(functions, GORILLA_TO_OPENAPI, ModelStyle.OPENAI_COMPLETIONS),
        check=lambda functions, calls, truth, category: ast_checker(
            functions, calls, truth, Language.PYTHON, category, CHECKER_MODEL
        ),
    )


@dataclass(frozen=True)
class Question:
    id: str
    category: str
    text: str
    messages: list[dict[str, Any]]
    functions: list[dict[str, Any]]
    truth: list[dict[str, Any]]


@dataclass
class Tally:
    """One configuration's outcomes on the test questions."""

    correct: int = 0
    asked: int = 0
    calls: int = 0
    failed: int = 0  # answered with an error (not counted correct)
    by_category: dict[str, list[int]] = field(default_factory=dict)  # category -> [correct, asked]

    def add(self, category: str, ok: bool, calls: int, failed: bool) -> None:
        self.correct, self.asked, self.calls, self.failed = (
            self.correct + ok,
            self.asked + 1,
            self.calls + calls,
            self.failed + failed,
        )
        cell = self.by_category.setdefault(category, [0, 0])
        cell[0], cell[1] = cell[0] + ok, cell[1] + 1

    @property
    def accuracy(self) -> float:
        return self.correct / self.asked if self.asked else 0.0


def load_questions(kit: types.SimpleNamespace, per_category: int, seed: int) -> tuple[list[Question], list[Question]]:
    """The seeded sample of each category, split in halves: (train, test)."""
    rng = random.Random(seed)
    train, test = [], []
    for category, filename in CATEGORIES.items():
        entries = [json.loads(line) for line in (kit.data / filename).read_text().splitlines() if line.strip()]
        answers = {
            row["id"]: row["ground_truth"]
            for row in map(json.loads, (kit.data / "possible_answer" / filename).read_text().splitlines())
        }
        picked = rng.sample(entries, min(per_category, len(entries)))
        questions = [
            Question(
                entry["id"],
                category,
                entry["question"][0][-1]["content"],
                entry["question"][0],
                entry["function"],
                answers[entry["id"]],
            )
            for entry in picked
        ]
        half = len(questions) // 2
        train += questions[:half]
        test += questions[half:]
    return train, test


async def ask(client: Any, kit: types.SimpleNamespace, question: Question, model: str, extra: dict[str, Any],
              max_tokens: int) -> tuple[bool, int, bool]:  # fmt: skip
    """One question to one configuration: (correct, model calls, failed)."""
    import openai

    try:
        reply = await client.chat.completions.create(
            model=model,
            messages=question.messages,
            tools=kit.tools(question.functions),
            tool_choice="required",
            temperature=0,
            max_tokens=max_tokens,
            extra_body=extra or None,
        )
    except openai.APIError:
        return False, 0, True
    metadata = reply.model_extra.get("moesaic") or {}
    calls = len(metadata.get("calls") or []) or 1  # the pipeline lists every model call; a direct call is one
    made = reply.choices[0].message.tool_calls or []
    try:
        decoded = [{call.function.name: json.loads(call.function.arguments)} for call in made]
    except json.JSONDecodeError:
        return False, calls, False
    if not decoded:
        return False, calls, False
    verdict = kit.check(question.functions, decoded, question.truth, question.category)
    return bool(verdict["valid"]), calls, False


async def run(url: str, kit: types.SimpleNamespace, questions: list[Question], model: str, extra: dict[str, Any],
              args: argparse.Namespace) -> tuple[Tally, dict[str, bool]]:  # fmt: skip
    """Every question to one configuration, ``--concurrency`` at a time: its tally and each question's outcome."""
    import openai

    client = openai.AsyncOpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=600)
    gate = asyncio.Semaphore(args.concurrency)
    tally, outcomes = Tally(), {}

    async def one(question: Question) -> None:
        async with gate:
            ok, calls, failed = await ask(client, kit, question, model, extra, args.max_tokens)
        tally.add(question.category, ok, calls, failed)
        outcomes[question.id] = ok

    await asyncio.gather(*(one(question) for question in questions))
    await client.close()
    return tally, outcomes


def profiles_file(train: list[Question], outcomes: dict[str, dict[str, bool]], folder: Path) -> Path:
    """The experts' profiles on the train half (each expert's outcome on each train question, by category)."""
    import numpy as np

    from router import OutcomeTable, build_profiles, export_json

    experts = sorted(outcomes)
    correct = np.array([[float(outcomes[e][q.id]) for e in experts] for q in train])
    table = OutcomeTable(
        source="bfcl-train",
        ids=[q.id for q in train],
        texts=[q.text for q in train],
        experts=experts,
        correct=correct,
        categories=[q.category for q in train],
    )
    path = folder / "bfcl-profiles.json"
    export_json(build_profiles(table, "default-bfcl"), path)
    return path


def escalate_pool(profiles: Path, folder: Path) -> Path:
    """The default pool with the escalate policy over the measured profiles."""
    import yaml

    from experts.config import load_pool

    document = load_pool("default").document()
    document["name"] = "default-bfcl"
    document["routing"] = {**document.get("routing", {}), "policy": "escalate", "profiles": {"json": profiles.name}}
    path = folder / "default-bfcl.yaml"
    path.write_text(yaml.safe_dump(document), encoding="utf-8")
    return path


def measure(args: argparse.Namespace) -> dict[str, Any]:
    from experts.config import load_pool

    kit = bfcl()
    train, test = load_questions(kit, args.per_category, args.seed)
    experts = [expert.name for expert in load_pool("default").experts if expert.routable]
    tallies: dict[str, Tally] = {}
    trio: list[str] = []
    folder = Path(tempfile.mkdtemp(prefix="moesaic-bfcl-"))
    started = time.monotonic()
    server = Server(ROOT / "deploy" / "pools" / "default.yaml", folder / "serve.log")
    try:
        server.wait_ready()
        train_outcomes = {}
        for expert in experts:
            print(f"expert/{expert} ...", file=sys.stderr, flush=True)
            _, train_outcomes[expert] = asyncio.run(run(server.url, kit, train, f"expert/{expert}", {}, args))
            tallies[f"expert/{expert}"], _ = asyncio.run(run(server.url, kit, test, f"expert/{expert}", {}, args))
        trio = sorted(experts, key=lambda name: -sum(train_outcomes[name].values()))[:3]  # chosen on train
        print(f"vote k=3 ({', '.join(trio)}) ...", file=sys.stderr, flush=True)
        vote = {"moesaic": {"experts": trio}}
        tallies["vote k=3"], _ = asyncio.run(run(server.url, kit, test, "moesaic", vote, args))
    finally:
        server.stop()
    profiles = profiles_file(train, train_outcomes, folder)
    server = Server(escalate_pool(profiles, folder), folder / "serve-escalate.log")
    try:
        server.wait_ready()
        print("escalate ...", file=sys.stderr, flush=True)
        tallies["escalate"], _ = asyncio.run(run(server.url, kit, test, "moesaic/escalate", {}, args))
    finally:
        server.stop()
    singles = {name: tally for name, tally in tallies.items() if name.startswith("expert/")}
    best_name = max(singles, key=lambda name: singles[name].accuracy)
    best = singles[best_name].accuracy
    return {
        "questions": {"train": len(train), "test": len(test), "per_category": args.per_category, "seed": args.seed},
        "max_tokens": args.max_tokens,
        "configurations": {
            name: {
                "accuracy": round(tally.accuracy, 4),
                "correct": tally.correct,
                "asked": tally.asked,
                "calls_per_question": round(tally.calls / tally.asked, 3) if tally.asked else 0.0,
                "failed": tally.failed,
                "by_category": {c: round(ok / n, 4) for c, (ok, n) in sorted(tally.by_category.items())},
            }
            for name, tally in tallies.items()
        },
        "best_single": best_name,
        "vote_experts": trio,
        "vote_gain": round(tallies["vote k=3"].accuracy - best, 4),
        "escalate_gain": round(tallies["escalate"].accuracy - best, 4),
        "target_met": tallies["vote k=3"].accuracy >= best,
        "seconds": round(time.monotonic() - started, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--per-category", type=int, default=40, help="questions sampled per category (half tested)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=160)
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON object on the last line")
    args = parser.parse_args()
    figures = measure(args)
    categories = list(CATEGORIES)
    print(f"BFCL v4 ({', '.join(categories)}): {figures['questions']['test']} test questions, seed {args.seed}")
    print(f"{'configuration':<20} {'accuracy':>9} {'calls/q':>8} " + " ".join(f"{c:>14}" for c in categories))
    for name, row in figures["configurations"].items():
        cells = " ".join(f"{row['by_category'].get(c, 0.0):>14.3f}" for c in categories)
        print(f"{name:<20} {row['accuracy']:>9.3f} {row['calls_per_question']:>8.2f} {cells}")
    verdict = "met" if figures["target_met"] else "NOT met"
    print(f"vote vs best single ({figures['best_single']}): {figures['vote_gain']:+.3f} (target: >= 0, {verdict}); "
          f"escalate {figures['escalate_gain']:+.3f}")  # fmt: skip
    if args.json:
        print(json.dumps(figures))


if __name__ == "__main__":
    main()
