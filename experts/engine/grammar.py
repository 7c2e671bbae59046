"""Structured output on our engines: an OpenAI ``response_format`` as a grammar that masks every step's logits.

As vLLM and SGLang do, we compile the request's JSON schema (or, for ``json_object``, "any JSON object") with
xgrammar into a grammar over the model's tokens, once per schema and tokenizer; each request then gets a matcher
that, before every sampled token, leaves only the tokens that keep the output a valid prefix of the grammar, and
lets the model stop (EOS) only once the JSON is complete. A small model can loop inside a value, so the grammar
leaves it no unbounded run where JSON allows one: whitespace between tokens is not free, and an integer or number
without bounds is held to JSON's safe-integer range (|x| <= 2**53 - 1, what every JSON parser reads exactly), so
its digits end. (Strings keep the schema's own ``maxLength``, if any: a looping string ends at max_tokens.) What
the engines share is in ``decoding.py``; this module is its grammar part.

The schema is the client's, and a compile's time and memory grow with it, so (``GrammarSettings``, from the
expert's pool-file ``options``, read by ``experts.backends.local``):

- every schema is measured first against ``experts._schema_limits.SchemaLimits`` (bytes, nesting depth, declared
  names, the estimated compile cost of its regex patterns), before anything recursive or xgrammar sees it; one over
  a limit is a ``GrammarError`` naming the limit.
  The HTTP server checks the same way, against its own settings; this check is for every other way in (batch mode,
  MCP, a direct actor call);
- compiled grammars are kept in an LRU of at most ``cache_size`` entries and ``cache_mb`` MiB (xgrammar's own count
  of a grammar's memory), our only cache: xgrammar's compiler is built with its own cache off (on by default, it
  keeps every grammar ever compiled, with no byte limit). A grammar's memory ranges from 0.05 MiB (a few string
  fields) to about 10 MiB (256 number fields, the most the default limits let through), so both bounds matter;
- a compile runs on a worker thread (at most ``compile_threads`` of them), outside the lock that guards the cache,
  so a slow compile holds up nobody else's cached lookup; a request waits for its compile at most
  ``compile_timeout_s``, then gets a ``GrammarError``. Requests for a schema that is already compiling wait for that
  compile instead of starting another.

Python cannot stop a thread, and xgrammar's compile cannot be interrupted: a compile that times out runs on to its
end (its grammar then lands in the cache, so the same schema succeeds next time). The timeout bounds how long a
request waits; the limits bound the work, a ``pattern``'s nested counted repetition included
(``schema_max_pattern_cost``: ``([a-z]{1,10}){1,10}`` took 3-6 s to compile, and with one more ``{1,3}`` around it
minutes, from a 60-byte schema). The estimate is not exact, so the worker cap keeps slow compiles from taking more
than ``compile_threads`` cores; while they run, new schemas wait in the queue (and time out), and cached ones are
served as before. A queued compile that no request waits for any more is dropped.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict, deque
from collections.abc import Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from experts._schema_limits import SchemaLimits, SchemaTooLarge, check_schema

if TYPE_CHECKING:
    import torch

ANY_OBJECT = json.dumps({"type": "object"})
SAFE_INTEGER = 2**53 - 1
_BOUNDS = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")
SCHEMA_WHERE = "response_format.json_schema.schema"


class GrammarError(ValueError):
    """A ``response_format`` that cannot be compiled into a grammar; the message says what to change."""


@dataclass(frozen=True)
class GrammarSettings:
    """How large a schema one model's grammars accept, how many they keep, and how long a request waits for one.

    ``setting_prefix`` is how messages name the settings (the ``local`` backend's pool-file ``options.``):
    ``options.schema_max_bytes``, ``options.grammar_compile_timeout_s``.
    """

    limits: SchemaLimits = field(default_factory=SchemaLimits)
    cache_size: int = 64
    cache_mb: float = 128.0
    compile_timeout_s: float = 10.0
    compile_threads: int = 2
    setting_prefix: str = "options."

    def __post_init__(self) -> None:
        for name in ("cache_size", "compile_threads"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"GrammarSettings.{name} must be a positive integer, not {value!r}")
        for name in ("cache_mb", "compile_timeout_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ValueError(f"GrammarSettings.{name} must be a positive number, not {value!r}")


TAG_KEY = "structural-tag:"  # a structural tag's cache key starts so (a JSON schema's starts with "{")


@dataclass(frozen=True)
class OutputFormat:
    """What a request's output must be: JSON matching ``schema`` (canonical JSON text of a JSON Schema), or, with
    ``structural_tag``, text shaped by xgrammar's structural tag in ``schema`` (free text with tool calls held to
    their JSON: ``tool_calls.auto_call_tag``)."""

    schema: str
    structural_tag: bool = False

    @property
    def key(self) -> str:
        """Its compiled grammar's key in the cache."""
        return TAG_KEY + self.schema if self.structural_tag else self.schema

    @classmethod
    def of(
        cls,
        response_format: Mapping[str, Any] | None,
        limits: SchemaLimits | None = None,
        setting_prefix: str = "options.",
    ) -> OutputFormat | None:
        """From OpenAI's ``response_format``; None for plain text (or none given).

        ``GrammarError`` when it is not one we can enforce, or its schema is over ``limits`` (default
        ``SchemaLimits()``; the message names ``setting_prefix`` + ``schema_max_...``).
        """
        if not response_format or response_format.get("type") in (None, "text"):
            return None
        if response_format["type"] == "json_object":
            return cls(ANY_OBJECT)
        if response_format["type"] == "json_schema":
            json_schema = response_format.get("json_schema") or {}
            schema = json_schema.get("schema") if isinstance(json_schema, Mapping) else None
            if not isinstance(schema, Mapping):
                raise GrammarError(f"{SCHEMA_WHERE} must be a JSON Schema object")
            try:  # first: bounded and json.dumps below recurse, and the compile's cost grows with the schema
                check_schema(schema, SCHEMA_WHERE, limits or SchemaLimits(), setting_prefix=setting_prefix + "schema_")
                return cls(json.dumps(bounded(schema), sort_keys=True))
            except SchemaTooLarge as error:
                raise GrammarError(str(error)) from None
            except (TypeError, ValueError, RecursionError) as error:  # not JSON (a Python caller's own objects)
                raise GrammarError(f"{SCHEMA_WHERE} is not a JSON document: {error}") from None
        raise GrammarError(f"response_format.type {response_format['type']!r} is not text, json_object or json_schema")


def bounded(schema: Any) -> Any:
    """``schema`` with every integer or number that has no bound held to JSON's safe-integer range."""
    if isinstance(schema, list):
        return [bounded(item) for item in schema]
    if not isinstance(schema, Mapping):
        return schema
    result = {key: bounded(value) for key, value in schema.items()}
    types = schema.get("type")
    names = [types] if isinstance(types, str) else types if isinstance(types, list) else []
    numeric = {name for name in names if isinstance(name, str)} & {"integer", "number"}
    if numeric and not any(key in schema for key in _BOUNDS):
        result.update(minimum=-SAFE_INTEGER, maximum=SAFE_INTEGER)
    return result


@dataclass
class _Compiling:
    """A schema being compiled (or waiting for a worker), and how many requests wait for it."""

    future: Future[Any]
    waiters: int = 0


class Grammars:
    """The compiled grammars of one model's tokenizer, and the per-step mask of constrained rows."""

    def __init__(
        self, tokenizer: Any, vocab_size: int, stop_ids: set[int], settings: GrammarSettings | None = None
    ) -> None:
        import xgrammar

        self._xgr = xgrammar
        self.settings = settings or GrammarSettings()
        info = xgrammar.TokenizerInfo.from_huggingface(
            tokenizer, vocab_size=vocab_size, stop_token_ids=sorted(stop_ids)
        )
        self.vocab_size = info.vocab_size
        self._compiler = xgrammar.GrammarCompiler(info, cache_enabled=False)  # ours below is the only cache
        self._compiled: OrderedDict[str, Any] = OrderedDict()  # schema -> compiled grammar, least recent first
        self._bytes: dict[str, int] = {}  # schema -> its compiled grammar's memory
        self._compiling: dict[str, _Compiling] = {}
        self._queue: deque[tuple[str, Future[Any]]] = deque()  # compiles waiting for a worker thread
        self._workers = 0
        self._lock = threading.Lock()  # requests are submitted from several threads; never held during a compile

    @property
    def cached(self) -> int:
        """How many compiled grammars are kept (at most ``settings.cache_size``)."""
        with self._lock:
            return len(self._compiled)

    @property
    def cached_bytes(self) -> int:
        """Their memory, as xgrammar counts it (at most ``settings.cache_mb`` MiB, unless one grammar alone is more)."""
        with self._lock:
            return sum(self._bytes.values())

    def compile(self, output: OutputFormat) -> Any:
        """The compiled grammar of ``output`` (cached); ``GrammarError`` when xgrammar cannot compile it, or not
        within ``settings.compile_timeout_s``."""
        key = output.key
        with self._lock:
            compiled = self._compiled.get(key)
            if compiled is not None:
                self._compiled.move_to_end(key)
                return compiled
            compiling = self._compiling.get(key)
            if compiling is None:
                compiling = self._compiling[key] = _Compiling(Future())
                self._queue.append((key, compiling.future))
                if self._workers < self.settings.compile_threads:
                    self._workers += 1
                    try:
                        threading.Thread(target=self._work, name="grammar-compile", daemon=True).start()
                    except RuntimeError:  # no thread to be had: a running worker (if any) takes it, or it times out
                        self._workers -= 1
            compiling.waiters += 1
        try:
            return compiling.future.result(timeout=self.settings.compile_timeout_s)
        except TimeoutError:
            timeout = self.settings.compile_timeout_s
            raise GrammarError(
                f"response_format's JSON schema took longer than {timeout:g} s to compile "
                f"({self.settings.setting_prefix}grammar_compile_timeout_s); simplify it: fewer fields, and no "
                "nested counted repetition such as ([a-z]{1,10}){1,10} in patterns"
            ) from None
        finally:
            with self._lock:
                compiling.waiters -= 1
                if compiling.waiters == 0 and compiling.future.cancel():  # still queued and nobody waits: drop it
                    self._queue.remove((key, compiling.future))
                    del self._compiling[key]

    def _work(self) -> None:
        """A worker thread: compile queued schemas until the queue is empty."""
        while True:
            with self._lock:
                if not self._queue:
                    self._workers -= 1
                    return
                key, future = self._queue.popleft()
                if not future.set_running_or_notify_cancel():
                    continue
            try:
                compiled = self._compile_now(key)
            except BaseException as error:  # handed to every request waiting for it
                with self._lock:
                    del self._compiling[key]
                future.set_exception(error)
                continue
            with self._lock:
                del self._compiling[key]
                self._remember(key, compiled)
            future.set_result(compiled)

    def _remember(self, key: str, compiled: Any) -> None:
        """Into the cache (the lock is held), dropping the least recently used grammars over either bound; the new
        one stays, even alone over ``cache_mb``: the requests that asked for it are about to use it."""
        self._compiled[key], self._bytes[key] = compiled, int(compiled.memory_size_bytes)
        most_bytes, total = self.settings.cache_mb * 2**20, sum(self._bytes.values())
        while len(self._compiled) > 1 and (len(self._compiled) > self.settings.cache_size or total > most_bytes):
            dropped, _ = self._compiled.popitem(last=False)
            total -= self._bytes.pop(dropped)

    def _compile_now(self, key: str) -> Any:
        try:
            if key.startswith(TAG_KEY):
                return self._compiler.compile_structural_tag(key.removeprefix(TAG_KEY))
            return self._compiler.compile_json_schema(key, any_whitespace=False)
        except (RuntimeError, ValueError) as error:  # xgrammar's message names the unsupported part
            reason = str(error).rsplit(": ", 1)[-1] if ": " in str(error) else str(error)
            raise GrammarError(f"response_format's JSON schema cannot be enforced: {reason}") from None

    def matcher(self, output: OutputFormat, compiled: Any = None) -> Any:
        """A fresh matcher for one request (it tracks what that request has generated so far); ``compiled`` is
        ``output``'s grammar when the caller holds it already (it may have left the cache since)."""
        return self._xgr.GrammarMatcher(compiled if compiled is not None else self.compile(output))

    def mask(self, logits: torch.Tensor, constrained: list[tuple[int, Any]]) -> None:
        """Set to -inf, in place, every token of ``logits`` (rows x vocab) that row's matcher does not allow."""
        bitmask = self._xgr.allocate_token_bitmask(len(logits), self.vocab_size)
        for row, matcher in constrained:
            matcher.fill_next_token_bitmask(bitmask, row)
        rows = [row for row, _ in constrained]
        self._xgr.apply_token_bitmask_inplace(logits, bitmask.to(logits.device), indices=rows)
