"""Errors in YAML config files (pool files, the service config) that name the file, the line or the field.

Both files are read the same way: YAML that does not parse names its line and column; a value
pydantic rejects names its field path (``experts[1] (name: 'math').backend``), the message and
the value it got, unless the field holds secrets.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError


def read_yaml(path: Path, error: type[Exception], what: str = "", hint: str = "") -> Any:
    """The parsed file; ``error`` (with the file, and the line for bad YAML) when it cannot be read.

    ``what`` names the file's kind in the message ("the service config"), ``hint`` says where to look.
    """
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as problem:
        mark = getattr(problem, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        detail = getattr(problem, "problem", None) or str(problem)
        raise error(f"{path}:{where}: not valid YAML: {detail}") from None
    except OSError as problem:
        kind = f" {what}" if what else ""
        raise error(f"{path}: cannot read{kind}: {problem.strerror}{hint}") from None


def field_path(location: tuple[Any, ...]) -> str:
    """pydantic's location as the user wrote it: ``experts[1].backend``."""
    parts: list[str] = []
    for item in location:
        parts.append(f"[{item}]" if isinstance(item, int) else ("." if parts else "") + str(item))
    return "".join(parts) or "(top level)"


def named_path(location: tuple[Any, ...], raw: Any, lists: Iterable[tuple[str, ...]]) -> str:
    """``field_path``, with the item's ``name`` after an index into one of ``lists`` when the file gives one.

    ``lists=[("experts",)]`` turns ``experts[1].backend`` into ``experts[1] (name: 'math').backend``.
    """
    path = field_path(location)
    for prefix in lists:
        depth = len(prefix)
        if len(location) <= depth or tuple(location[:depth]) != prefix or not isinstance(location[depth], int):
            continue
        try:
            node = raw
            for key in prefix:
                node = node[key]
            name = node[location[depth]]["name"]
        except (KeyError, IndexError, TypeError):
            return path
        item = field_path(location[: depth + 1])
        return path.replace(item, f"{item} (name: {name!r})", 1)
    return path


def describe(error: ValidationError, raw: Any, lists: Iterable[tuple[str, ...]] = (), secret: str | None = None) -> str:
    """One line per problem: where, what, and the value given (never for a location that passes ``secret``)."""
    lists = list(lists)
    lines = []
    for problem in error.errors():
        got = problem.get("input")
        shown = "" if isinstance(got, (dict, list)) or got is None else f" (got {got!r})"
        if secret is not None and secret in problem["loc"]:
            shown = ""  # never echo key material back, even pasted in the wrong place
        message = problem["msg"].removeprefix("Value error, ")
        lines.append(f"  {named_path(problem['loc'], raw, lists)}: {message}{shown}")
    return "\n".join(lines)
