"""Structured output within bounds on our engines (``experts.engine.grammar``): schemas over the limits refused
before they are compiled, the pool file's grammar options, and, on the embedded model's tokenizer, a bounded cache
of compiled grammars, compiles off the cache's lock and a compile timeout.

Issue 27, row 5: the compile held the lock every structured request takes, and neither our cache nor xgrammar's
ever dropped a grammar. The limits themselves are tested in test_schema_limits.py.
"""

import json
import re
import threading
import time
from typing import Any

import pytest

from experts._schema_limits import SchemaLimits
from experts.backends.local import LocalBackend
from experts.config._pool_spec import ExpertSpec, load_pool
from experts.engine.grammar import GrammarError, Grammars, GrammarSettings, OutputFormat
from experts.errors import BackendError
from experts.types import GenerationRequest, Message
from tests.schema_cases import (
    NESTED,
    NESTED_DEEPER,
    UNLIMITED_PATTERNS,
    UUID,
    WHERE,
    compact_size,
    json_schema,
    nested,
    with_fields,
    with_pattern,
)

MODEL = "embedded:smollm2-135m-instruct"
# Nested counted repetition in a pattern: a few bytes that take xgrammar about a second to compile (0.4-1.2 s on
# a 2-core CI machine; ``([a-z]{1,10}){1,10}`` takes 1.3-6 s, and one more level of nesting half a minute or more).
# Its cost (1,000) is the default max_pattern_cost; the tests that need a slow compile lift the limit.
SLOW_PATTERN = "^([a-z]{1,10}){1,5}$"


# -- the actor's side: response_format to OutputFormat ----------------------------------------------------------
def test_a_42kb_schema_is_refused_before_it_is_compiled() -> None:
    schema = with_fields(900, "string") | {"description": "x" * 5_000}
    assert compact_size(schema) > 42_000
    started = time.perf_counter()
    with pytest.raises(GrammarError) as caught:
        OutputFormat.of(json_schema(schema))
    assert time.perf_counter() - started < 0.25  # some tens of microseconds; compiling it took seconds
    assert str(caught.value).startswith(f"{WHERE} declares at least 900 properties, more than the 256 allowed")
    assert "(options.schema_max_properties)" in str(caught.value)
    with pytest.raises(GrammarError, match=r"is at least \d+ bytes .* \(options.schema_max_bytes\)"):
        OutputFormat.of(json_schema({"type": "string", "description": "x" * 20_000}))
    with pytest.raises(GrammarError, match=r"nests more than the 16 levels allowed \(options.schema_max_depth\)"):
        OutputFormat.of(json_schema(nested(10_000)))  # and no RecursionError from bounded() or json.dumps
    tighter = SchemaLimits(max_properties=2)
    with pytest.raises(GrammarError, match="more than the 2 allowed"):
        OutputFormat.of(json_schema(with_fields(3)), tighter)
    assert OutputFormat.of(json_schema(with_fields(2)), tighter) is not None


def test_a_costly_pattern_is_refused_before_it_is_compiled() -> None:
    for pattern in (NESTED, NESTED_DEEPER):
        started = time.perf_counter()
        with pytest.raises(GrammarError) as caught:
            OutputFormat.of(json_schema(with_pattern(pattern)))
        assert time.perf_counter() - started < 0.25
        assert str(caught.value).startswith(f'{WHERE}.properties.x.pattern: pattern "{pattern}" costs ')
        assert "allowed (options.schema_max_pattern_cost); use a simpler pattern" in str(caught.value)
    with pytest.raises(GrammarError, match="cannot be read as a regular expression"):
        OutputFormat.of(json_schema(with_pattern("^(a$")))
    assert OutputFormat.of(json_schema(with_pattern(NESTED)), UNLIMITED_PATTERNS) is not None
    assert OutputFormat.of(json_schema(with_pattern(UUID))) is not None


def test_a_malformed_schema_is_a_grammar_error() -> None:
    with pytest.raises(GrammarError, match="must be a JSON Schema object"):
        OutputFormat.of({"type": "json_schema", "json_schema": ["not", "a", "mapping"]})
    parsed = OutputFormat.of(json_schema({"type": [{"odd": 1}, "integer"]}))  # no TypeError from bounded()
    assert parsed is not None and json.loads(parsed.schema)["maximum"] == 2**53 - 1


# -- the pool file's options ----------------------------------------------------------------------------------
def test_grammar_options_with_their_defaults() -> None:
    settings = LocalBackend(load_pool("default").expert("math")).grammar_settings
    assert settings == GrammarSettings()
    assert (settings.cache_size, settings.cache_mb, settings.compile_timeout_s) == (64, 128.0, 10.0)
    assert settings.limits == SchemaLimits(16_384, 16, 256, 1_000)
    options = {
        "grammar_cache_size": 8,
        "grammar_cache_mb": 16,
        "grammar_compile_timeout_s": 2.5,
        "schema_max_bytes": 4096,
        "schema_max_depth": 32,
        "schema_max_properties": 50,
        "schema_max_pattern_cost": 5000,
    }
    chosen = LocalBackend(ExpertSpec(name="x", backend="local", model=MODEL, options=options)).grammar_settings
    assert (chosen.cache_size, chosen.cache_mb, chosen.compile_timeout_s) == (8, 16.0, 2.5)
    assert chosen.limits == SchemaLimits(4096, 32, 50, 5000)


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("grammar_cache_size", 0, "options.grammar_cache_size must be a positive integer, not 0"),
        ("grammar_cache_size", "64", "options.grammar_cache_size must be a positive integer, not '64'"),
        ("grammar_compile_timeout_s", 0, "options.grammar_compile_timeout_s must be a number of seconds above 0"),
        ("grammar_compile_timeout_s", "10s", "options.grammar_compile_timeout_s must be a number of seconds"),
        ("grammar_compile_timeout_s", True, "options.grammar_compile_timeout_s must be a number of seconds"),
        (
            "grammar_compile_timeout_s",
            7200,
            "options.grammar_compile_timeout_s must be a number of seconds above 0 and at most 3600, not 7200",
        ),
        ("grammar_cache_mb", -1, "options.grammar_cache_mb must be a number of MiB above 0"),
        ("schema_max_bytes", -5, "options.schema_max_bytes must be a positive integer, not -5"),
        ("schema_max_depth", 1000, "options.schema_max_depth must be at most 128, not 1000"),
        ("schema_max_properties", 2.5, "options.schema_max_properties must be a positive integer, not 2.5"),
        ("schema_max_pattern_cost", 0, "options.schema_max_pattern_cost must be a positive integer, not 0"),
        ("schema_max_pattern_cost", "1k", "options.schema_max_pattern_cost must be a positive integer, not '1k'"),
    ],
)
def test_bad_grammar_options_name_the_expert_and_the_option(option: str, value: Any, message: str) -> None:
    with pytest.raises(BackendError, match="expert 'x': " + message.replace("(", r"\(").replace(")", r"\)")):
        LocalBackend(ExpertSpec(name="x", backend="local", model=MODEL, options={option: value}))


# -- compiled grammars, on the embedded model's tokenizer -----------------------------------------------------
class Vocabulary:
    """The embedded model's tokenizer, what ``Grammars`` needs of the model (no weights, no Ray)."""

    def __init__(self) -> None:
        from transformers import AutoConfig, AutoTokenizer

        from experts.engine.embedded import prepare_model, resolve_model

        directory = prepare_model(resolve_model(MODEL))
        self.tokenizer = AutoTokenizer.from_pretrained(directory)
        self.vocab_size = int(AutoConfig.from_pretrained(directory).vocab_size)

    def grammars(self, settings: GrammarSettings | None = None) -> Grammars:
        stop = {int(self.tokenizer.eos_token_id)}
        if settings is None:  # the constructor as it always was
            return Grammars(self.tokenizer, self.vocab_size, stop)
        return Grammars(self.tokenizer, self.vocab_size, stop, settings)


@pytest.fixture(scope="module")
def vocabulary() -> Vocabulary:
    return Vocabulary()


def schema_format(schema: Any, limits: SchemaLimits | None = None) -> OutputFormat:
    parsed = OutputFormat.of(json_schema(schema), limits)
    assert parsed is not None
    return parsed


def small(index: int) -> OutputFormat:
    return schema_format({"type": "object", "properties": {f"name_{index}": {"type": "string"}}})


SLOW = {"type": "string", "pattern": SLOW_PATTERN}


def slow_format() -> OutputFormat:
    """A schema that takes about a second to compile (its pattern's cost let through)."""
    return schema_format(SLOW, UNLIMITED_PATTERNS)


@pytest.mark.model
def test_the_cache_stays_at_its_capacity(vocabulary: Vocabulary) -> None:
    grammars = vocabulary.grammars()  # the defaults: 64 grammars
    for index in range(3 * 64):
        grammars.compile(small(index))
    assert len(grammars._compiled) == 64
    assert grammars._compiler.get_cache_size_bytes() == 0  # xgrammar keeps nothing of its own


@pytest.mark.model
def test_the_least_recently_used_grammar_leaves_first(vocabulary: Vocabulary) -> None:
    grammars = vocabulary.grammars(GrammarSettings(cache_size=3))
    first = grammars.compile(small(0))
    grammars.compile(small(1))
    grammars.compile(small(2))
    assert grammars.compile(small(0)) is first  # a hit, and now the most recent
    grammars.compile(small(3))  # small(1) leaves
    assert grammars.cached == 3
    assert set(grammars._compiled) == {small(0).schema, small(2).schema, small(3).schema}
    matcher = grammars.matcher(small(1), first)  # the caller's own compiled grammar, whatever the cache holds
    assert matcher.accept_string('{"name_0": "x"}') and grammars.cached == 3


@pytest.mark.model
def test_the_cache_stays_within_its_memory(vocabulary: Vocabulary) -> None:
    grammars = vocabulary.grammars(GrammarSettings(cache_mb=1.0))
    sizes = []
    for index in range(12):  # about 0.3 MiB each: a few fit in 1 MiB
        sizes.append(
            grammars.compile(schema_format(with_fields(12, "integer") | {"title": str(index)})).memory_size_bytes
        )
    assert 0.1 * 2**20 < min(sizes) and max(sizes) < 0.5 * 2**20
    assert 1 < grammars.cached < 12 and grammars.cached_bytes <= 2**20
    assert grammars.cached_bytes == sum(sizes[-grammars.cached :])  # the most recent ones
    alone = vocabulary.grammars(GrammarSettings(cache_mb=0.01))
    alone.compile(small(0))
    alone.compile(schema_format(with_fields(12)))  # over the bound by itself: kept, alone, for its requests
    assert alone.cached == 1 and alone.cached_bytes > 0.01 * 2**20


@pytest.mark.model
def test_a_slow_compile_holds_up_no_cached_lookup(vocabulary: Vocabulary) -> None:
    grammars = vocabulary.grammars()
    cached = grammars.compile(small(0))
    slow = threading.Thread(target=grammars.compile, args=(slow_format(),))
    slow.start()
    try:
        time.sleep(0.05)  # the slow compile is under way
        started = time.perf_counter()
        assert grammars.compile(small(0)) is cached
        assert slow.is_alive()  # answered while the slow compile runs on
        assert time.perf_counter() - started < 0.25
    finally:
        slow.join()


@pytest.mark.model
def test_the_compile_timeout_fails_the_request_and_the_compile_lands_in_the_cache(vocabulary: Vocabulary) -> None:
    measure = vocabulary.grammars(GrammarSettings(compile_timeout_s=120))
    started = time.perf_counter()
    measure.compile(slow_format())
    took = time.perf_counter() - started
    assert took > 0.2, f"the slow schema compiled in {took:.3f} s; pick a slower one"

    grammars = vocabulary.grammars(GrammarSettings(compile_timeout_s=took / 20))
    started = time.perf_counter()
    with pytest.raises(GrammarError) as caught:
        grammars.compile(slow_format())
    assert time.perf_counter() - started < took / 2
    assert str(caught.value).startswith(f"response_format's JSON schema took longer than {took / 20:g} s to compile")
    assert "(options.grammar_compile_timeout_s)" in str(caught.value)
    deadline = time.monotonic() + 20 * took
    while slow_format().schema not in grammars._compiled and time.monotonic() < deadline:
        time.sleep(0.02)  # the compile ran on to its end
    assert grammars.compile(slow_format()) is not None and grammars.cached == 1


@pytest.mark.model
def test_one_schema_is_compiled_once_however_many_ask(vocabulary: Vocabulary) -> None:
    grammars = vocabulary.grammars(GrammarSettings(compile_timeout_s=120))
    compiles: list[str] = []
    compile_now = grammars._compile_now

    def counted(schema: str) -> Any:
        compiles.append(schema)
        time.sleep(0.2)  # long enough for every thread to ask while it runs
        return compile_now(schema)

    grammars._compile_now = counted  # type: ignore[method-assign]
    results: list[Any] = []
    threads = [threading.Thread(target=lambda: results.append(grammars.compile(small(7)))) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(compiles) == 1 and len(results) == 4 and all(result is results[0] for result in results)


@pytest.mark.model
def test_a_queued_compile_nobody_waits_for_is_dropped(vocabulary: Vocabulary) -> None:
    grammars = vocabulary.grammars(GrammarSettings(compile_timeout_s=0.05, compile_threads=1))
    with pytest.raises(GrammarError, match="took longer than"):
        grammars.compile(slow_format())  # it keeps the one worker busy for a while
    with pytest.raises(GrammarError, match="took longer than"):
        grammars.compile(small(1))  # queued behind it, and given up
    assert not grammars._queue and small(1).schema not in grammars._compiling
    deadline = time.monotonic() + 60
    while grammars._compiling and time.monotonic() < deadline:
        time.sleep(0.02)
    assert set(grammars._compiled) == {slow_format().schema}  # the dropped one was never compiled


@pytest.mark.model
def test_the_actor_refuses_a_costly_pattern_and_enforces_a_cheap_one(vocabulary: Vocabulary) -> None:
    from types import SimpleNamespace

    import torch

    from experts.engine.decoding import RowDecoder

    model = SimpleNamespace(  # what RowDecoder reads of the model: no weights needed
        generation_config=SimpleNamespace(eos_token_id=vocabulary.tokenizer.eos_token_id),
        config=SimpleNamespace(vocab_size=vocabulary.vocab_size),
    )
    spec = ExpertSpec(name="x", backend="local", model=MODEL, options={"schema_max_pattern_cost": 1_500})
    rows = RowDecoder(model, vocabulary.tokenizer, LocalBackend(spec).grammar_settings)
    for pattern in (NESTED, NESTED_DEEPER):
        started = time.perf_counter()
        with pytest.raises(GrammarError) as caught:
            rows.output_format(json_schema(with_pattern(pattern)))
        assert time.perf_counter() - started < 0.25
        assert "more than the 1500 allowed (options.schema_max_pattern_cost)" in str(caught.value)
    assert rows.grammars.cached == 0  # nothing was compiled

    date = rows.output_format(json_schema(with_pattern(r"^\d{4}-\d{2}-\d{2}$")))
    assert date is not None
    compiled = rows.grammars.compile(date)
    assert rows.grammars.matcher(date, compiled).accept_string('{"x": "2024-02-29"}')
    assert not rows.grammars.matcher(date, compiled).accept_string('{"x": "2024-2-29"}')
    assert not rows.grammars.matcher(date, compiled).accept_string('{"x": "today"}')
    matcher = rows.grammars.matcher(date, compiled)
    assert matcher.accept_string('{"x": "2024-0')
    logits = torch.zeros(1, vocabulary.vocab_size)
    rows.grammars.mask(logits, [(0, matcher)])
    allowed = [vocabulary.tokenizer.decode([token]) for token in torch.nonzero(logits[0] == 0).flatten().tolist()]
    assert allowed and all(re.fullmatch(r"\d", text) for text in allowed)  # the month's second digit, nothing else


@pytest.mark.model
@pytest.mark.parametrize("engine", ["continuous", "static"])
async def test_the_backend_applies_its_options_and_shares_one_cache(engine: str) -> None:
    options = {"engine": engine, "grammar_cache_size": 2, "schema_max_properties": 8}
    backend = LocalBackend(ExpertSpec(name="x", backend="local", model=MODEL, options=options))
    await backend.load()
    try:

        def ask(response_format: dict[str, Any]) -> GenerationRequest:
            return GenerationRequest([Message("user", "Give me JSON.")], max_tokens=8, response_format=response_format)

        outputs = await backend.generate([ask(json_schema(with_fields(9))), ask(json_schema(with_fields(2)))])
        grammars = backend._decoder.rows.grammars
        if engine == "continuous":
            assert backend._continuous.rows is backend._decoder.rows  # one cache, not one per engine
        assert grammars.settings.cache_size == 2 and grammars.cached == 1
    finally:
        await backend.unload()
    assert outputs[0].error_code == "invalid_response_format"
    assert f"{WHERE} declares at least 9 properties, more than the 8 allowed (options.schema_max_properties)" in (
        outputs[0].error or ""
    )
    assert outputs[1].error is None and outputs[1].text.startswith("{")
