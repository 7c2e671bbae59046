"""Schema size limits (``experts._schema_limits``): bytes, depth, declared properties and the compile cost of regex
patterns, checked without recursion and stopping at the first limit exceeded. Pure: no model, no xgrammar.

Issue 27, row 5: a 42 KB ``response_format`` took 17.8 s to compile and kept +600 MB in the actor, and a 60-byte
schema whose ``pattern`` nests counted repetitions (``^(([a-z]{1,10}){1,10}){1,3}$``) compiled for minutes: every
schema is measured before anything compiles it. The actor's side (the cache, the timeout) is test_grammar_limits.py.
"""

import re
import time
from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from experts._schema_limits import PatternUnreadable, SchemaLimits, SchemaTooLarge, check_schema, pattern_cost
from tests.schema_cases import (
    NESTED,
    NESTED_DEEPER,
    UNLIMITED_PATTERNS,
    UUID,
    WHERE,
    compact_size,
    nested,
    with_fields,
    with_pattern,
)


class Exploding(Mapping[str, Any]):
    """A part of a schema the check must not reach (it stopped before)."""

    def __getitem__(self, key: str) -> Any:
        raise AssertionError("the check went on past the limit")

    def __iter__(self) -> Iterator[str]:
        raise AssertionError("the check went on past the limit")

    def __len__(self) -> int:
        raise AssertionError("the check went on past the limit")


# -- check_schema ---------------------------------------------------------------------------------------------
def test_bytes_just_under_the_limit_pass_and_just_over_fail() -> None:
    schema = {
        "type": "object",
        "description": "naïve café ✓",  # UTF-8 bytes, not characters
        "properties": {"a": {"type": "number", "enum": [1.5, -2, None, True, False]}, "b": {"type": "string"}},
        "required": ["a"],
    }
    size = compact_size(schema)
    check_schema(schema, WHERE, SchemaLimits(max_bytes=size))
    with pytest.raises(SchemaTooLarge) as caught:
        check_schema(schema, WHERE, SchemaLimits(max_bytes=size - 1))
    error = caught.value
    assert (error.limit, error.allowed, error.where) == ("max_bytes", size - 1, WHERE)
    assert size - 1 < error.value <= size and error.setting == "limits.schema_max_bytes"
    assert str(error).startswith(f"{WHERE} is at least {error.value} bytes as compact JSON, more than the {size - 1}")
    assert "(limits.schema_max_bytes)" in str(error)


def test_depth_counts_every_object_and_array() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "array", "items": {"type": "string"}}}}  # 4 levels
    check_schema(schema, WHERE, SchemaLimits(max_depth=4))
    with pytest.raises(SchemaTooLarge) as caught:
        check_schema(schema, "tools[3].function.parameters", SchemaLimits(max_depth=3))
    error = caught.value
    assert (error.limit, error.value, error.allowed, error.where) == ("max_depth", 4, 3, "tools[3].function.parameters")
    assert str(error).startswith("tools[3].function.parameters nests more than the 3 levels allowed")
    assert "(limits.schema_max_depth)" in str(error)
    check_schema(nested(16), WHERE, SchemaLimits())
    with pytest.raises(SchemaTooLarge, match="max_depth"):
        check_schema(nested(17), WHERE, SchemaLimits())
    with pytest.raises(SchemaTooLarge, match="max_depth"):  # arrays nest too
        check_schema({"enum": [[[[[]]]]]}, WHERE, SchemaLimits(max_depth=5))


def test_properties_just_under_the_limit_pass_and_just_over_fail() -> None:
    check_schema(with_fields(256, "string"), WHERE, SchemaLimits(max_bytes=10**6))
    with pytest.raises(SchemaTooLarge) as caught:
        check_schema(with_fields(257, "string"), WHERE, SchemaLimits(max_bytes=10**6))
    error = caught.value
    assert (error.limit, error.value, error.allowed, error.where) == ("max_properties", 257, 256, WHERE)
    assert str(error) == (
        f"{WHERE} declares at least 257 properties, more than the 256 allowed (limits.schema_max_properties); "
        "split the schema or ask for fewer fields"
    )


def test_what_counts_as_a_property() -> None:
    schema = {
        "type": "object",
        "properties": {  # 3: a property named "properties" (or "enum") is a name like any other
            "properties": {"type": "object", "properties": {"x": {"type": "string"}}},  # 1
            "enum": {"type": "object", "properties": {"y": {"type": "string"}}},  # 1
            "list": {"type": "array", "items": {"anyOf": [{"properties": {"z": {}}}, {"type": "null"}]}},  # 1
        },
        "patternProperties": {"^k": {"type": "string"}},  # 1
        "$defs": {"Node": {"type": "object", "properties": {"n": {"type": "integer"}}}},  # 1 + 1
        "definitions": {"Old": {"type": "string"}},  # 1
        "default": {"properties": {"not": 1, "counted": 2}},  # data: none
        "enum": [{"properties": {"data": 1}}],  # data: none
        "examples": [{"$defs": {"data": 1}}],
        "const": {"properties": {"data": 1}},
    }
    check_schema(schema, WHERE, SchemaLimits(max_properties=10))
    with pytest.raises(SchemaTooLarge) as caught:
        check_schema(schema, WHERE, SchemaLimits(max_properties=9))
    assert caught.value.limit == "max_properties" and caught.value.value == 10


def test_the_message_names_the_callers_setting() -> None:
    with pytest.raises(SchemaTooLarge) as caught:
        check_schema(with_fields(3), WHERE, SchemaLimits(max_properties=2), setting_prefix="options.schema_")
    assert caught.value.setting == "options.schema_max_properties"
    assert "more than the 2 allowed (options.schema_max_properties)" in str(caught.value)


def test_a_very_deep_schema_is_walked_without_recursion() -> None:
    deep = nested(10_000, {"type": "string"})
    with pytest.raises(SchemaTooLarge) as caught:
        check_schema(deep, WHERE, SchemaLimits())
    assert (caught.value.limit, caught.value.value) == ("max_depth", 17)
    check_schema(deep, WHERE, SchemaLimits(max_bytes=10**9, max_depth=10**6))  # no RecursionError
    deep_list: list[Any] = []
    for _ in range(10_000):
        deep_list = [deep_list]
    check_schema({"enum": deep_list}, WHERE, SchemaLimits(max_bytes=10**9, max_depth=10**6))


def test_the_check_stops_at_the_first_limit_exceeded() -> None:
    with pytest.raises(SchemaTooLarge, match="max_bytes"):  # the list's commas alone are over: no item is visited
        check_schema({"anyOf": [Exploding()] * 20_000}, WHERE, SchemaLimits())
    with pytest.raises(SchemaTooLarge, match="max_properties"):  # counted before the properties' schemas are
        check_schema({"properties": {f"p{i}": Exploding() for i in range(300)}}, WHERE, SchemaLimits(10**9))
    with pytest.raises(SchemaTooLarge, match="max_depth"):
        check_schema(nested(17, Exploding()), WHERE, SchemaLimits())


def test_limits_are_positive_integers() -> None:
    assert SchemaLimits() == SchemaLimits(max_bytes=16_384, max_depth=16, max_properties=256, max_pattern_cost=1_000)
    for bad in (0, -1, 1.5, True, "10"):
        with pytest.raises(ValueError, match="max_depth must be a positive integer"):
            SchemaLimits(max_depth=bad)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="max_pattern_cost must be a positive integer"):
            SchemaLimits(max_pattern_cost=bad)  # type: ignore[arg-type]


# -- patterns -------------------------------------------------------------------------------------------------
EMAIL = r"^[a-zA-Z0-9._%+-]+@[a-zA-Z0-9.-]+\.[a-zA-Z]{2,}$"
DATE_TIME = (
    r"^(\d{4})-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])T([01]\d|2[0-3]):[0-5]\d:[0-5]\d(\.\d+)?(Z|[+-]\d{2}:\d{2})$"
)
SEMVER = (
    r"^v?(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)"
    r"(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$"
)
HOSTNAME = r"^[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)*$"
PHONE = r"^(\+\d{1,3} ?)?(\(\d{1,4}\) ?)?\d{1,4}([ -]?\d{1,4}){1,4}$"
IPV4 = r"^(25[0-5]|2[0-4]\d|[01]?\d\d?)(\.(25[0-5]|2[0-4]\d|[01]?\d\d?)){3}$"
IPV6 = r"^([0-9a-fA-F]{1,4}:){7}[0-9a-fA-F]{1,4}$"
# Patterns people put in schemas, with their costs; each compiled in at most 0.6 s (2-core machine, SmolLM2).
REALISTIC = [
    (r"^\d{3}-\d{4}$", 8),
    (r"^\d{4}-\d{2}-\d{2}$", 10),
    (r"^#[0-9a-fA-F]{6}$", 7),
    (EMAIL, 9),
    (UUID, 36),
    (DATE_TIME, 37),
    (SEMVER, 32),
    (HOSTNAME, 127),
    (PHONE, 416),
    (IPV4, 609),
    (IPV6, 704),
    (r"^[a-z]{1,64}$", 64),
    (r"^[a-zA-Z0-9_]{1,255}$", 255),
    (r"^.{1,1000}$", 1000),
    (r"^(?<year>\d{4})-(?<month>\d{2})$", 7),  # ECMA's named groups
]
# Patterns that took seconds to compile (2-core machine, SmolLM2), with their costs.
PATHOLOGICAL = [
    (NESTED, 2_000),  # 1.3-2.2 s here, 3-6 s where first measured
    (NESTED_DEEPER, 120_000),  # 17-27 s here, minutes where first measured
    (r"^(\w+\s?){1,50}$", 3_000),  # 2.7-6.5 s
    (r"^([a-z]{1,10}){1,20}$", 4_000),  # 3.4-9.4 s
    (r"^.{1,3000}$", 3_000),  # 5.8-8 s
    (r'^[^"]{0,5000}$', 5_000),  # 20-24 s
]


@pytest.mark.parametrize(("pattern", "cost"), REALISTIC)
def test_patterns_people_use_cost_less_than_the_default(pattern: str, cost: int) -> None:
    assert pattern_cost(pattern) == cost <= SchemaLimits().max_pattern_cost
    check_schema(with_pattern(pattern), WHERE, SchemaLimits())


@pytest.mark.parametrize(("pattern", "cost"), PATHOLOGICAL)
def test_nested_or_long_counted_repetition_costs_more_than_the_default(pattern: str, cost: int) -> None:
    assert pattern_cost(pattern) == cost > SchemaLimits().max_pattern_cost


def test_how_a_pattern_costs() -> None:
    assert pattern_cost("") == 0 and pattern_cost("^$") == 0 and pattern_cost(r"\bab\B") == 2  # anchors cost nothing
    assert pattern_cost("[a-z]") == pattern_cost(".") == pattern_cost(r"\d") == pattern_cost('[^"]') == 1
    assert pattern_cost("abc|de") == 5 and pattern_cost("(?:ab)(c)") == 3  # alternation and sequence: the sum
    assert pattern_cost("[a-z]{1,64}") == pattern_cost("[a-z]{64}") == 64  # n copies of the body
    assert pattern_cost("(ab){1,5}") == 10 and pattern_cost("([a-z]{3}){1,10}") == 30  # fixed-length bodies
    assert pattern_cost("(a|bc){1,5}") == 5 * 3 * 20  # a body of varying length: 20 times more per copy
    assert pattern_cost(r"(\d{1,3}\.){3}") == 3 * 4 * 20
    assert pattern_cost("([a-z]{1,10})?") == 10  # one copy: nothing to split among
    assert pattern_cost("[a-z]*") == 1 and pattern_cost("[a-z]+") == 2 and pattern_cost("[a-z]{3,}") == 4  # loops
    assert pattern_cost("([a-z]{1,10})+") == 2 * 10 * 20 and pattern_cost("([a-z]+){1,10}") == 10 * 2 * 20
    assert pattern_cost("(([a-z]{1,3}){1,3}){1,3}") == 3 * (3 * 3 * 20) * 20  # every varying level multiplies
    assert pattern_cost("(?=ab)c(?!d)") == 4 and pattern_cost("(a)(?(1)b|cd)") == 4  # lookarounds, conditionals
    huge = pattern_cost("(((a{0,4294967294}){0,4294967294}){0,4294967294}){0,4294967294}" * 10)
    assert isinstance(huge, int) and SchemaLimits().max_pattern_cost < huge <= 10**15  # held below the cap


def test_ecma_syntax_is_read_and_what_cannot_be_read_is_unreadable() -> None:
    assert pattern_cost(r"^(?<year>\d{4})$") == 4  # ECMA's named group: (?P<year>...) to Python
    assert pattern_cost("^[^]{1,3}$") == 3  # [^]: any character, [\s\S] to Python
    assert pattern_cost(r"^\cJ[\cA]$") == 2  # control escapes
    assert pattern_cost(r"(?<=a)b(?<!c)") == 3  # lookbehind stays lookbehind
    for pattern, complaint in [
        ("^(a$", "missing ), unterminated subpattern"),
        (r"^\p{L}+$", r"bad escape \p"),
        ("a{3,2}", "min repeat greater than max repeat"),
        ("a**", "multiple repeat"),
        ("(" * 5_000 + ")" * 5_000, "its groups nest too deeply"),
    ]:
        with pytest.raises(PatternUnreadable, match=re.escape(complaint)):
            pattern_cost(pattern)


def test_the_two_measured_schemas_are_refused_at_once() -> None:
    for pattern, cost in [(NESTED, 2_000), (NESTED_DEEPER, 120_000)]:
        schema = with_pattern(pattern)
        assert compact_size(schema) < 120
        started = time.perf_counter()
        with pytest.raises(SchemaTooLarge) as caught:
            check_schema(schema, WHERE, SchemaLimits())
        assert time.perf_counter() - started < 0.25  # well under a millisecond; compiling took seconds to minutes
        error = caught.value
        assert (error.limit, error.value, error.allowed, error.where) == ("max_pattern_cost", cost, 1_000, WHERE)
        assert (error.setting, error.pattern, error.at, error.cost) == (
            "limits.schema_max_pattern_cost",
            pattern,
            ".properties.x.pattern",
            cost,
        )
    assert str(error) == (
        f'{WHERE}.properties.x.pattern: pattern "{NESTED_DEEPER}" costs 120000 to compile, more than the 1000 allowed '
        "(limits.schema_max_pattern_cost); use a simpler pattern: no repetition inside a counted repetition such as "
        "([a-z]{1,10}){1,10}, and maxLength rather than a large {m,n} to bound a string's length"
    )
    several = [r"^\d{3}-\d{4}$", r"^\d{4}-\d{2}-\d{2}$", EMAIL, UUID, DATE_TIME, SEMVER, HOSTNAME, IPV6]
    realistic = {"type": "object", "properties": {f"p{i}": {"pattern": p} for i, p in enumerate(several)}}
    check_schema(realistic, WHERE, SchemaLimits())  # 963 in all
    check_schema(with_pattern(NESTED_DEEPER), WHERE, UNLIMITED_PATTERNS)


def test_where_patterns_are_found() -> None:
    schema = {
        "type": "object",
        "properties": {
            "pattern": {"type": "string", "pattern": "^a$"},  # 1: a property named "pattern" is a name
            "list": {"type": "array", "items": {"type": "string", "pattern": "^[a-z]{1,8}$"}},  # 8
            "keys": {"type": "object", "propertyNames": {"pattern": "^[a-z]{2}$"}},  # 2
            "either": {"anyOf": [{"type": "null"}, {"type": "string", "pattern": "^b{3}$"}]},  # 3
            "odd": {"type": "string", "pattern": 5},  # not a string: not a pattern (xgrammar's to judge)
        },
        "patternProperties": {"^x-[a-z]+$": {"type": "string"}},  # 4: each name is a pattern
        "$defs": {"Code": {"type": "string", "pattern": "^[A-Z]{4}$"}},  # 4
        "enum": [{"pattern": NESTED_DEEPER}],  # data: none
        "default": {"pattern": "(("},
        "examples": [{"patternProperties": {NESTED_DEEPER: 1}}],
        "const": {"pattern": NESTED_DEEPER},
    }
    check_schema(schema, WHERE, SchemaLimits(max_pattern_cost=22))
    with pytest.raises(SchemaTooLarge) as caught:
        check_schema(schema, WHERE, SchemaLimits(max_pattern_cost=21))
    assert (caught.value.limit, caught.value.value) == ("max_pattern_cost", 22)  # the sum over the schema
    places = {
        "propertyNames": ({"propertyNames": {"pattern": NESTED}}, ".propertyNames.pattern"),
        "patternProperties": ({"patternProperties": {"^ok$": {}, NESTED: {}}}, ".patternProperties"),
        "anyOf": ({"anyOf": [{}, {"items": {"pattern": NESTED}}]}, ".anyOf[1].items.pattern"),
        "odd names": ({"properties": {"a b": {"pattern": NESTED}}}, '.properties["a b"].pattern'),
        "$defs": ({"$defs": {"x-y": {"pattern": NESTED}}}, ".$defs.x-y.pattern"),
    }
    for schema, at in places.values():
        with pytest.raises(SchemaTooLarge) as caught:
            check_schema(schema, "tools[2].function.parameters", SchemaLimits())
        assert caught.value.at == at and caught.value.pattern == NESTED
        assert str(caught.value).startswith(f'tools[2].function.parameters{at}: pattern "{NESTED}" costs 2000')


def test_the_schemas_patterns_are_summed() -> None:
    def fields(count: int) -> dict[str, Any]:  # 24 of these compiled in 3 s
        return {
            "type": "object",
            "properties": {f"p{i}": {"type": "string", "pattern": "^[a-z]{1,64}$"} for i in range(count)},
        }

    check_schema(fields(15), WHERE, SchemaLimits())  # 960
    with pytest.raises(SchemaTooLarge) as caught:
        check_schema(fields(24), WHERE, SchemaLimits())
    assert (caught.value.value, caught.value.cost) == (1_024, 64)  # stopped at the 16th
    assert "costs 64 to compile (the schema's patterns so far: 1024), more than the 1000 allowed" in str(caught.value)


def test_a_pattern_that_cannot_be_read_is_refused() -> None:
    with pytest.raises(SchemaTooLarge) as caught:
        check_schema(with_pattern(r"^\p{Lu}(a$"), WHERE, SchemaLimits(), setting_prefix="options.schema_")
    error = caught.value
    assert (error.limit, error.value, error.cost, error.setting) == (
        "max_pattern_cost",
        0,
        0,
        "options.schema_max_pattern_cost",
    )
    assert error.reason == r"bad escape \p at position 1"
    assert str(error) == (
        rf'{WHERE}.properties.x.pattern: pattern "^\\p{{Lu}}(a$" cannot be read as a regular expression (bad escape '
        r"\p at position 1), so its cost to compile is unknown (options.schema_max_pattern_cost); send an ECMA-262 "
        r"pattern without backreferences, lookbehind or \p{...} classes, or leave it out"
    )
    long = "x" * 100
    with pytest.raises(SchemaTooLarge, match=re.escape(f'pattern "{long[:77]}..." cannot be read')):
        check_schema(with_pattern(long + "("), WHERE, SchemaLimits())  # shown cut short


def test_an_expert_on_vllm_refuses_schemas_over_its_limits_before_they_reach_the_shared_engine() -> None:
    from experts.config._pool_spec import ExpertSpec
    from experts.errors import ErrorCode
    from experts.types import GenerationRequest, Message
    from experts.vllm.client import VllmBackend

    spec = ExpertSpec(name="e", backend="local", model="embedded:x", options={"schema_max_depth": 3})
    backend = VllmBackend(spec, "engine")
    deep: dict[str, Any] = {"type": "object"}
    for _ in range(5):
        deep = {"type": "object", "properties": {"a": deep}}
    tool = {"type": "function", "function": {"name": "f", "parameters": deep}}
    ask = [Message("user", "hi")]
    refused = backend.over_limits(GenerationRequest(ask, tools=[tool]))
    assert refused is not None and refused.error_code == ErrorCode.INVALID_TOOLS
    assert "tools[0].function.parameters" in str(refused.error) and "options.schema_max_depth" in str(refused.error)
    response_format = {"type": "json_schema", "json_schema": {"name": "x", "schema": deep}}
    as_format = backend.over_limits(GenerationRequest(ask, response_format=response_format))
    assert as_format is not None and as_format.error_code == ErrorCode.INVALID_RESPONSE_FORMAT
    small = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
    assert backend.over_limits(GenerationRequest(ask, tools=[small])) is None
