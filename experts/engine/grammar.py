"""Structured output on our engines: an OpenAI ``response_format`` as a grammar that masks every step's logits.

As vLLM and SGLang do, we compile the request's JSON schema (or, for ``json_object``, "any JSON object") with
xgrammar into a grammar over the model's tokens, once per schema and tokenizer; each request then gets a matcher
that, before every sampled token, leaves only the tokens that keep the output a valid prefix of the grammar, and
lets the model stop (EOS) only once the JSON is complete. A small model can loop inside a value, so the grammar
leaves it no unbounded run where JSON allows one: whitespace between tokens is not free, and an integer or number
without bounds is held to JSON's safe-integer range (|x| <= 2**53 - 1, what every JSON parser reads exactly), so
its digits end. (Strings keep the schema's own ``maxLength``, if any: a looping string ends at max_tokens.) What
the engines share is in ``decoding.py``; this module is its grammar part.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

ANY_OBJECT = json.dumps({"type": "object"})
SAFE_INTEGER = 2**53 - 1
_BOUNDS = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")


class GrammarError(ValueError):
    """A ``response_format`` that cannot be compiled into a grammar; the message says what to change."""


@dataclass(frozen=True)
class OutputFormat:
    """What a request's output must be: JSON matching ``schema`` (canonical JSON text of a JSON Schema)."""

    schema: str

    @classmethod
    def of(cls, response_format: Mapping[str, Any] | None) -> OutputFormat | None:
        """From OpenAI's ``response_format``; None for plain text (or none given)."""
        if not response_format or response_format.get("type") in (None, "text"):
            return None
        if response_format["type"] == "json_object":
            return cls(ANY_OBJECT)
        if response_format["type"] == "json_schema":
            schema = (response_format.get("json_schema") or {}).get("schema")
            if not isinstance(schema, Mapping):
                raise GrammarError("response_format.json_schema.schema must be a JSON Schema object")
            return cls(json.dumps(bounded(schema), sort_keys=True))
        raise GrammarError(f"response_format.type {response_format['type']!r} is not text, json_object or json_schema")


def bounded(schema: Any) -> Any:
    """``schema`` with every integer or number that has no bound held to JSON's safe-integer range."""
    if isinstance(schema, list):
        return [bounded(item) for item in schema]
    if not isinstance(schema, Mapping):
        return schema
    result = {key: bounded(value) for key, value in schema.items()}
    types = schema.get("type")
    numeric = {types} if isinstance(types, str) else set(types) if isinstance(types, list) else set()
    if numeric & {"integer", "number"} and not any(key in schema for key in _BOUNDS):
        result.update(minimum=-SAFE_INTEGER, maximum=SAFE_INTEGER)
    return result


class Grammars:
    """The compiled grammars of one model's tokenizer, and the per-step mask of constrained rows."""

    def __init__(self, tokenizer: Any, vocab_size: int, stop_ids: set[int]) -> None:
        import xgrammar

        self._xgr = xgrammar
        info = xgrammar.TokenizerInfo.from_huggingface(
            tokenizer, vocab_size=vocab_size, stop_token_ids=sorted(stop_ids)
        )
        self.vocab_size = info.vocab_size
        self._compiler = xgrammar.GrammarCompiler(info)
        self._compiled: dict[str, Any] = {}
        self._lock = threading.Lock()  # requests are submitted from several threads

    def compile(self, output: OutputFormat) -> Any:
        """The compiled grammar of ``output`` (cached); ``GrammarError`` when xgrammar cannot compile it."""
        with self._lock:
            compiled = self._compiled.get(output.schema)
            if compiled is None:
                try:
                    compiled = self._compiler.compile_json_schema(output.schema, any_whitespace=False)
                except RuntimeError as error:  # xgrammar's message names the unsupported part of the schema
                    reason = str(error).rsplit(": ", 1)[-1] if ": " in str(error) else str(error)
                    raise GrammarError(f"response_format's JSON schema cannot be enforced: {reason}") from None
                self._compiled[output.schema] = compiled
        return compiled

    def matcher(self, output: OutputFormat) -> Any:
        """A fresh matcher for one request (it tracks what that request has generated so far)."""
        return self._xgr.GrammarMatcher(self.compile(output))

    def mask(self, logits: torch.Tensor, constrained: list[tuple[int, Any]]) -> None:
        """Set to -inf, in place, every token of ``logits`` (rows x vocab) that row's matcher does not allow."""
        bitmask = self._xgr.allocate_token_bitmask(len(logits), self.vocab_size)
        for row, matcher in constrained:
            matcher.fill_next_token_bitmask(bitmask, row)
        rows = [row for row, _ in constrained]
        self._xgr.apply_token_bitmask_inplace(logits, bitmask.to(logits.device), indices=rows)
