r"""How large a client's JSON Schema may be: the limits, and the check that enforces them.

A JSON Schema from a request (``response_format.json_schema.schema``, a tool's ``function.parameters``) is
compiled into a grammar on our local engines, and the compile's time and memory grow with the schema: unbounded,
one request could hold an expert for many seconds and leave hundreds of MB behind. So every schema is measured
before anything else touches it, at the HTTP edge (against the service config's ``limits.schema_max_*``) and again
inside the expert's actor (against the pool file's ``options.schema_max_*``), because requests also reach actors
from batch mode and MCP.

Plain data and pure functions, no third-party imports: any process may import this module.

What is measured (``check_schema``), each on the schema as the client sent it:

- ``max_bytes``: the size of the schema as compact JSON (``json.dumps(schema, separators=(",", ":"),
  ensure_ascii=False)``), in UTF-8 bytes.
- ``max_depth``: the nesting depth of the JSON document: the outermost object or array is level 1 and every object
  or array inside another adds one; scalars add nothing. ``{"type": "object", "properties": {"a": {"type":
  "string"}}}`` is 3 levels deep, so each inline level of nested objects costs two (``properties`` and the property's
  schema); a schema that names its parts in ``$defs`` and refers to them with ``$ref`` stays shallow.
- ``max_properties``: the number of names declared, summed over the whole schema: every entry of a ``properties``,
  ``patternProperties``, ``dependentSchemas``, ``$defs`` or ``definitions`` object that belongs to a schema counts
  one. Keys inside data (the values of ``enum``, ``const``, ``default`` and ``examples``) do not count, and neither
  does a property that happens to be named ``properties``, as a keyword would. Unknown keywords are walked as
  schemas, which can only count more.
- ``max_pattern_cost``: the estimated compile cost of the schema's regular expressions, summed: the value of every
  ``pattern`` keyword (``propertyNames``' included) and every name of a ``patternProperties`` object
  (``pattern_cost``). A pattern that cannot be parsed is refused under this limit too: its cost is unknown.

``enum`` values and ``anyOf``/``oneOf`` branches are not counted separately: measured (SmolLM2's tokenizer,
xgrammar 0.2.9), a 2,000-value enum compiles in 0.04 s and 200 ``anyOf`` branches in 0.4 s, and ``max_bytes``
bounds both. A pattern is different: ``^([a-z]{1,10}){1,10}$`` takes seconds to compile and
``^(([a-z]{1,10}){1,10}){1,3}$`` half a minute or more, from a 60-byte schema, hence ``max_pattern_cost``.

How a pattern's cost is estimated (``pattern_cost``), from its parse tree (Python's own regex parser: JSON
Schema's patterns are ECMA-262, close enough for an estimate; ECMA's ``(?<name>``, ``[^]`` and ``\cX`` are
translated first). xgrammar unrolls a counted repetition ``{m,n}`` (for n up to 128) into n copies of its body and
precomputes the token masks of every copy; when the body can match texts of different lengths, a token can also be
split among the copies in many ways, and the work multiplies. So:

- a character, a character class or ``.``: 1; an anchor: 0; a sequence or an alternation: the sum of its parts;
- ``{m,n}``: n times its body's cost, and ``NESTED_REPEAT_WEIGHT`` (20) times more when n >= 2 and the body's
  length varies (``([a-z]{1,10}){1,10}``: 10 x 10 x 20 = 2,000; ``(\d{1,3}\.){3}``: 3 x 4 x 20 = 240;
  ``([a-z]{3}){1,10}``, fixed length: 30); ``?`` is ``{0,1}``;
- ``*`` counts its body once, ``+`` twice, ``{m,}`` m + 1 times (a loop, not copies), with the same weight when
  m + 1 >= 2 and the body's length varies.

The unit is roughly a millisecond of compile on a 2-core machine (xgrammar 0.2.9, SmolLM2's tokenizer; two runs):
``[a-z]{1,64}`` (cost 64) compiled in 0.08-0.17 s, ``.{1,1000}`` (1,000) in 0.55-0.7 s, ``([a-z]{1,10}){1,5}``
(1,000) in 0.4-1.1 s, ``([a-z]{1,10}){1,10}`` (2,000) in 1.3-2.2 s, ``.{1,2000}`` (2,000) in 2.1-2.8 s,
``(\w+\s?){1,50}`` (3,000) in 2.7-6.5 s, ``.{1,3000}`` (3,000) in 5.8-8 s, ``([a-z]{1,10}){1,20}`` (4,000) in
3.4-9.4 s, ``[^"]{0,5000}`` (5,000) in 20-24 s and ``(([a-z]{1,10}){1,10}){1,3}`` (120,000) in 17-27 s; 24
properties with ``[a-z]{1,64}`` each (1,536 in all) in 3 s, hence the sum. Patterns people use cost far less than
the default 1,000: a date 10, an e-mail address 9, a UUID 36, an ISO date-time 37, semver 32, a hostname 127, an
IPv4 address 609, an IPv6 address 704. The estimate errs on the safe side: a body that varies only between
separators (``( [A-Z][a-z]{1,30}){0,3}``, 1,951, or ``(\w+,){0,20}``, 1,202) compiles in a fraction of a second
but is refused; ``(\w+,)*`` with ``maxLength`` (0.01 s even at 5,000) says the same cheaply.

The walk is iterative (the input is the client's: a deeply nested document must not exhaust Python's stack) and
stops at the first limit exceeded, so the measured value in the error is what was counted up to that point: at
least that much.
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from re import _parser as _regex  # private, but its parse tree is the same in Python 3.11-3.13; see pattern_cost
from typing import Any

# Keywords whose value maps names to schemas: each entry is one declared name.
NAME_MAPS = frozenset({"properties", "patternProperties", "dependentSchemas", "$defs", "definitions"})
# Keywords whose value is data (an instance, not a schema): measured for size and depth only.
DATA_KEYWORDS = frozenset({"enum", "const", "default", "examples"})
# How much more a copy of a repeated body costs when the body's length varies (see the module's docstring).
NESTED_REPEAT_WEIGHT = 20

# what a container in the walk is: a schema (or list of them), a name map, data, the names of patternProperties
_SCHEMA, _NAMES, _DATA, _PATTERN_NAMES = 0, 1, 2, 3
_LIMITS = ("max_bytes", "max_depth", "max_properties", "max_pattern_cost")
_COST_CAP = 10**15  # costs are held below this: a pattern's nested counts could otherwise make huge integers
_REPEATS = frozenset({_regex.MAX_REPEAT, _regex.MIN_REPEAT, getattr(_regex, "POSSESSIVE_REPEAT", _regex.MAX_REPEAT)})


@dataclass(frozen=True)
class SchemaLimits:
    """The largest schema accepted; see the module's docstring for what each limit measures."""

    max_bytes: int = 16_384
    max_depth: int = 16
    max_properties: int = 256
    max_pattern_cost: int = 1_000

    def __post_init__(self) -> None:
        for name in _LIMITS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"SchemaLimits.{name} must be a positive integer, not {value!r}")


class SchemaTooLarge(ValueError):
    """A schema over one of its limits.

    ``limit`` is the limit's name (``max_bytes``, ``max_depth``, ``max_properties``, ``max_pattern_cost``),
    ``value`` what was measured when the check stopped (at least that much), ``allowed`` the limit, ``where`` the
    schema's place in the request (``response_format.json_schema.schema``, ``tools[3].function.parameters``) and
    ``setting`` the configuration key the message names (``setting_prefix + limit``, e.g.
    ``limits.schema_max_properties``).

    For ``max_pattern_cost`` also: ``pattern``, the pattern that took the total over (or could not be parsed);
    ``at``, the place of its keyword inside the schema (``.properties.code.pattern``, ``.patternProperties``);
    ``cost``, its own cost (``value`` is the total so far, with it); and ``reason``, when it could not be parsed, the
    parser's complaint (then ``cost`` is 0 and ``value`` the total before it).
    """

    def __init__(
        self,
        limit: str,
        value: int,
        allowed: int,
        where: str,
        setting: str,
        *,
        pattern: str | None = None,
        at: str = "",
        cost: int = 0,
        reason: str = "",
    ) -> None:
        self.limit, self.value, self.allowed, self.where, self.setting = limit, value, allowed, where, setting
        self.pattern, self.at, self.cost, self.reason = pattern, at, cost, reason
        super().__init__(describe(self))


class PatternUnreadable(ValueError):
    """A pattern that Python's regex parser cannot read (the message is its complaint): its cost is unknown."""


def describe(error: SchemaTooLarge) -> str:
    """The message of a ``SchemaTooLarge``: which limit, by how much, and what to do."""
    limit, value, allowed, where, setting = error.limit, error.value, error.allowed, error.where, error.setting
    pattern, at, cost, reason = error.pattern, error.at, error.cost, error.reason
    if limit == "max_pattern_cost":
        shown = json.dumps(pattern if pattern is None or len(pattern) <= 80 else pattern[:77] + "...")
        if reason:
            return (
                f"{where}{at}: pattern {shown} cannot be read as a regular expression ({reason}), so its cost to "
                f"compile is unknown ({setting}); send an ECMA-262 pattern without backreferences, lookbehind or "
                "\\p{...} classes, or leave it out"
            )
        total = f" (the schema's patterns so far: {value})" if value != cost else ""
        return (
            f"{where}{at}: pattern {shown} costs {cost} to compile{total}, more than the {allowed} allowed "
            f"({setting}); use a simpler pattern: no repetition inside a counted repetition such as "
            "([a-z]{1,10}){1,10}, and maxLength rather than a large {m,n} to bound a string's length"
        )
    if limit == "max_bytes":
        return (
            f"{where} is at least {value} bytes as compact JSON, more than the {allowed} allowed ({setting}); "
            "send a smaller schema: fewer fields, shorter descriptions, shared parts once in $defs"
        )
    if limit == "max_depth":
        return (
            f"{where} nests more than the {allowed} levels allowed ({setting}); flatten the schema, or move "
            "nested objects into $defs and refer to them with $ref"
        )
    return (
        f"{where} declares at least {value} properties, more than the {allowed} allowed ({setting}); "
        "split the schema or ask for fewer fields"
    )


def check_schema(schema: Any, where: str, limits: SchemaLimits, *, setting_prefix: str = "limits.schema_") -> None:
    """Raise ``SchemaTooLarge`` when ``schema`` (parsed JSON) exceeds one of ``limits``; otherwise return None.

    ``where`` names the schema in the message; ``setting_prefix`` + the limit's name is the setting the message
    tells the caller about (the HTTP server's ``limits.schema_max_bytes``; an expert's ``options.schema_max_bytes``).
    Iterative, and it stops at the first limit exceeded; a small schema costs some tens of microseconds, and a pattern
    seen for the first time about 3 microseconds a character more (parsing it; see ``pattern_cost``).
    """
    size = properties = patterns = 0

    def too_large(limit: str, value: int) -> SchemaTooLarge:
        return SchemaTooLarge(limit, value, getattr(limits, limit), where, setting_prefix + limit)

    def add_pattern(pattern: str, path: Any) -> None:
        """Add ``pattern``'s cost (its keyword at ``path``) to the schema's, or raise over ``max_pattern_cost``."""
        nonlocal patterns
        allowed, setting = limits.max_pattern_cost, setting_prefix + "max_pattern_cost"
        try:
            cost = pattern_cost(pattern)
        except PatternUnreadable as error:
            at, reason = _place(path), str(error)
            raise SchemaTooLarge(
                "max_pattern_cost", patterns, allowed, where, setting, pattern=pattern, at=at, reason=reason
            ) from None
        patterns = min(patterns + cost, _COST_CAP)
        if patterns > allowed:
            at = _place(path)
            raise SchemaTooLarge(
                "max_pattern_cost", patterns, allowed, where, setting, pattern=pattern, at=at, cost=cost
            )

    # (value, its depth if a container, its role, its path: None or (the parent's path, key or index))
    stack: list[tuple[Any, int, int, Any]] = [(schema, 1, _SCHEMA, None)]
    while stack:
        value, depth, role, path = stack.pop()
        if isinstance(value, Mapping):
            if depth > limits.max_depth:
                raise too_large("max_depth", depth)
            size += max(2 * len(value) + 1, 2)  # braces, one ':' per entry, commas between entries
            for key, item in value.items():
                size += _scalar_size(key if isinstance(key, str) else str(key))
                if size > limits.max_bytes:
                    raise too_large("max_bytes", size)
                if role == _NAMES or role == _PATTERN_NAMES:  # a name map's values are schemas, whatever the names
                    if role == _PATTERN_NAMES:
                        add_pattern(key if isinstance(key, str) else str(key), path)
                    child = _SCHEMA
                elif role == _DATA or key in DATA_KEYWORDS:
                    child = _DATA
                elif key in NAME_MAPS and isinstance(item, Mapping):
                    properties += len(item)
                    if properties > limits.max_properties:
                        raise too_large("max_properties", properties)
                    child = _PATTERN_NAMES if key == "patternProperties" else _NAMES
                else:
                    if key == "pattern" and isinstance(item, str):
                        add_pattern(item, (path, key))
                    child = _SCHEMA
                stack.append((item, depth + 1, child, (path, key)))
        elif isinstance(value, (list, tuple)):
            if depth > limits.max_depth:
                raise too_large("max_depth", depth)
            size += max(len(value) + 1, 2)  # brackets and commas
            if size <= limits.max_bytes:
                stack.extend((item, depth + 1, role, (path, index)) for index, item in enumerate(value))
        else:
            size += _scalar_size(value)
        if size > limits.max_bytes:
            raise too_large("max_bytes", size)


def pattern_cost(pattern: str) -> int:
    """The estimated cost of compiling ``pattern`` (a JSON Schema regex) into a grammar; see the module's docstring.

    ``PatternUnreadable`` when Python's regex parser cannot read it (after ECMA's ``(?<name>``, ``[^]`` and ``\\cX``
    are translated), too deep nesting included: xgrammar would refuse or misread most such patterns anyway.
    Iterative over the parse tree; the cost is held below 10**15. Parsing takes about 3 microseconds a character
    (0.2 ms for a UUID's pattern), and clients send the same schemas again and again, so the costs of the last
    1,024 patterns of up to 1,000 characters are remembered.
    """
    if len(pattern) <= 1_000:
        return _remembered_cost(pattern)
    return _pattern_cost(pattern)


@functools.lru_cache(maxsize=1_024)
def _remembered_cost(pattern: str) -> int:
    return _pattern_cost(pattern)


def _pattern_cost(pattern: str) -> int:
    try:
        tree = _regex.parse(_python_syntax(pattern))
    except re.error as error:
        raise PatternUnreadable(str(error)) from None
    except RecursionError:
        raise PatternUnreadable("its groups nest too deeply") from None
    except (OverflowError, ValueError, TypeError) as error:  # a count too large for the parser, or the like
        raise PatternUnreadable(f"{type(error).__name__}: {error}") from None
    return _tree_cost(tree)


def _tree_cost(tree: Any) -> int:
    """``pattern_cost`` of a parse tree (``re._parser``'s: a list of (opcode, argument) items), without recursion."""
    # Post-order: ("seq", items) and ("item", (op, av)) are entered, then left as ("end_seq", count) and
    # ("end_item", (op, av, count)) once their children's (cost, shortest, longest) are on ``done``.
    todo: list[tuple[str, Any]] = [("seq", tree)]
    done: list[tuple[int, float, float]] = []
    while todo:
        kind, node = todo.pop()
        if kind == "seq":
            items = list(node)
            todo.append(("end_seq", len(items)))
            todo.extend(("item", item) for item in reversed(items))
        elif kind == "item":
            op, av = node
            children = _children(op, av)
            if children:
                todo.append(("end_item", (op, av, len(children))))
                todo.extend(("seq", child) for child in reversed(children))
            else:
                done.append(_leaf(op))
        else:
            count = node if kind == "end_seq" else node[2]
            parts = done[len(done) - count :]
            del done[len(done) - count :]
            if kind == "end_seq":
                cost = min(sum(part[0] for part in parts), _COST_CAP)
                done.append((cost, sum(part[1] for part in parts), sum(part[2] for part in parts)))
            else:
                done.append(_combine(node[0], node[1], parts))
    return int(done[0][0])


def _children(op: Any, av: Any) -> list[Any]:
    """The sub-sequences of one parse-tree item (none for a character, a class, an anchor, a back-reference)."""
    if op in _REPEATS:
        return [av[2]]
    if op is _regex.BRANCH:
        return list(av[1])
    if op is _regex.SUBPATTERN:
        return [av[-1]]
    if op is _regex.ATOMIC_GROUP:
        return [av]
    if op is _regex.ASSERT or op is _regex.ASSERT_NOT:
        return [av[1]]
    if op is _regex.GROUPREF_EXISTS:
        return [branch for branch in av[1:] if branch is not None]
    return []


def _leaf(op: Any) -> tuple[int, float, float]:
    if op is _regex.AT:  # ^, $, \b: match no character
        return (0, 0, 0)
    if op is _regex.GROUPREF:  # a back-reference: any length (xgrammar refuses them)
        return (1, 0, math.inf)
    return (1, 1, 1)  # a character, a class, .


def _combine(op: Any, av: Any, parts: list[tuple[int, float, float]]) -> tuple[int, float, float]:
    """(cost, shortest, longest match in characters) of an item from its children's."""
    if op in _REPEATS:
        least, most = av[0], av[1]
        cost, shortest, longest = parts[0]
        unbounded = most >= _regex.MAXREPEAT
        copies = least + 1 if unbounded else most
        weight = NESTED_REPEAT_WEIGHT if copies >= 2 and shortest != longest else 1
        if unbounded or longest == math.inf:
            longest = math.inf if most and longest else 0
        else:
            longest = most * longest
        return (min(copies * cost * weight, _COST_CAP), least * shortest, longest)
    cost = min(sum(part[0] for part in parts), _COST_CAP)
    if op is _regex.BRANCH:
        return (cost, min(part[1] for part in parts), max(part[2] for part in parts))
    if op is _regex.GROUPREF_EXISTS:  # (?(1)yes|no); without ``no`` the other way matches nothing
        shortest = min(part[1] for part in parts) if len(parts) == 2 else 0
        return (cost, shortest, max(part[2] for part in parts))
    if op is _regex.ASSERT or op is _regex.ASSERT_NOT:  # a lookaround matches no character itself
        return (cost, 0, 0)
    return (cost, parts[0][1], parts[0][2])  # a group


def _python_syntax(pattern: str) -> str:
    """``pattern`` (ECMA-262) with the syntax Python's parser lacks translated: ``(?<name>`` to ``(?P<name>``,
    ``[^]`` (any character) to ``[\\s\\S]``, ``\\cX`` (a control character) to ``\\x..``."""
    out: list[str] = []
    index, in_class, length = 0, False, len(pattern)
    while index < length:
        char = pattern[index]
        if char == "\\" and index + 1 < length:
            letter = pattern[index + 2] if index + 2 < length else ""
            if pattern[index + 1] == "c" and letter.isascii() and letter.isalpha():
                out.append(f"\\x{ord(letter) % 32:02x}")
                index += 3
            else:
                out.append(pattern[index : index + 2])
                index += 2
            continue
        if in_class:
            in_class = char != "]"
        elif pattern.startswith("[^]", index):
            out.append("[\\s\\S]")
            index += 3
            continue
        elif char == "[":
            in_class = True
        elif pattern.startswith("(?<", index) and pattern[index + 3 : index + 4] not in ("=", "!"):
            out.append("(?P<")
            index += 3
            continue
        out.append(char)
        index += 1
    return "".join(out)


def _place(path: Any) -> str:
    """A path of the walk as text after the schema's place: ``.properties.code.pattern``, ``.anyOf[1]``."""
    parts: list[str] = []
    while path is not None:
        path, key = path
        if isinstance(key, int):
            parts.append(f"[{key}]")
        elif isinstance(key, str) and key.replace("$", "").replace("-", "_").isidentifier():
            parts.append(f".{key}")
        else:
            parts.append(f"[{json.dumps(key if isinstance(key, str) else str(key), ensure_ascii=False)}]")
    return "".join(reversed(parts))


def _scalar_size(value: Any) -> int:
    """Bytes of a scalar as compact JSON (a value JSON cannot hold counts as its ``str``)."""
    if isinstance(value, str):
        return len(json.dumps(value, ensure_ascii=False).encode())
    if value is None or isinstance(value, bool):
        return 4 if value is not False else 5
    if isinstance(value, int):  # past 4,300 digits Python refuses str(): at least this many digits, from the bits
        if value.bit_length() < 10_000:
            return len(str(value))
        return (value.bit_length() - 1) * 30103 // 100_000 + 1 + (value < 0)
    if isinstance(value, float):
        return len(json.dumps(value))
    return len(str(value).encode()) + 2
