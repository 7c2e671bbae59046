"""Reading a JSON request body by hand, with a 4xx in OpenAI's shape for everything a client can get wrong.

The chat and route endpoints parse their bodies themselves (a malformed body is a 400 that
says what is wrong, not FastAPI's 422: a 400 as OpenAI answers). This is the one place that does it: a declared
content type that is not JSON or none at all (415: a web page may post any simple body cross-origin without a
CORS preflight, but not a JSON one; see ``service/browser_guard.py``), an empty body, bytes that are not UTF-8,
text that is not JSON, JSON nested deeper than any request needs (Python's parser would otherwise hit its
recursion limit: a 500), unpaired UTF-16 surrogates (``"\\ud800"`` parses, but no reply or log containing it could
be encoded), and a body that is not a JSON object (400).
"""

from __future__ import annotations

import json
import re
from typing import Any

from orchestrator.server.errors import APIError

MAX_DEPTH = 32  # a chat request nests about 5 deep (body > messages > message > content part > text)
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


def parse_json_object(raw: bytes, content_type: str | None = None) -> dict[str, Any]:
    """The body as a dict, or an ``APIError`` naming the problem."""
    if not content_type:  # a web page can post a body without one cross-origin, with no CORS preflight
        raise APIError(
            415,
            "the request has no Content-Type; send the body as JSON with 'Content-Type: application/json'",
            code="unsupported_media_type",
        )
    if not _is_json(content_type):
        raise APIError(
            415,
            f"Content-Type {content_type.split(';')[0].strip()!r} is not supported; send the body as application/json",
            code="unsupported_media_type",
        )
    if not raw.strip():
        raise APIError(400, "request body is empty; send a JSON object", code="invalid_json")
    try:
        data = json.loads(raw)
    except UnicodeDecodeError as error:
        raise APIError(
            400, f"request body is not valid UTF-8: {error.reason} at byte {error.start}", code="invalid_json"
        ) from None
    except json.JSONDecodeError as error:
        raise APIError(400, f"request body is not valid JSON: {error}", code="invalid_json") from None
    except RecursionError:
        raise APIError(400, f"request body nests deeper than {MAX_DEPTH} levels", code="invalid_json") from None
    if not isinstance(data, dict):
        raise APIError(400, f"request body must be a JSON object, not {_json_kind(data)}", code="invalid_json")
    if raw.count(b"[") + raw.count(b"{") > MAX_DEPTH and _depth(data) > MAX_DEPTH:
        raise APIError(400, f"request body nests deeper than {MAX_DEPTH} levels", code="invalid_json")
    if _SURROGATE_ESCAPE.search(raw) and not _encodable(data):
        raise APIError(
            400, "request body contains an unpaired UTF-16 surrogate escape (\\ud800-\\udfff)", code="invalid_json"
        )
    return data


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media in ("application/json", "text/json") or (media.startswith("application/") and media.endswith("+json"))


def _depth(node: Any) -> int:
    """Nesting depth of parsed JSON, without recursion (the input is the client's)."""
    deepest, stack = 0, [(node, 1)]
    while stack:
        item, level = stack.pop()
        deepest = max(deepest, level)
        if deepest > MAX_DEPTH:
            return deepest
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else ()
        stack.extend((child, level + 1) for child in children if isinstance(child, (dict, list)))
    return deepest


def _encodable(data: dict[str, Any]) -> bool:
    try:
        json.dumps(data, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _json_kind(value: Any) -> str:
    return {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(type(value), "a number")
