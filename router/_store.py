"""Profiles in Redis: versioned, one key space per pool; JSON export and import.

Keys (``moesaic:profiles:<pool>:...``):
  ``:v<N>``     one profile document (JSON), never modified once written
  ``:versions`` sorted set of the stored version numbers
  ``:current``  the version the router uses
  ``:aggregators`` the measured aggregator choice (``moesaic bench-aggregators``)
Saving writes a new version and makes it current in one transaction, so a router that
reads ``current`` never sees half a profile.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from router._profiles import ProfileSet


class ProfileStoreError(RuntimeError):
    """The store cannot do what was asked; the message says what to check."""


class ProfileStore:
    """Versioned profile documents for one pool in one Redis database."""

    def __init__(self, url: str, pool: str) -> None:
        import redis

        self.pool = pool
        self.prefix = f"moesaic:profiles:{pool}"
        self._redis = redis.Redis.from_url(url, decode_responses=True)
        self.url = url

    def _key(self, suffix: str) -> str:
        return f"{self.prefix}:{suffix}"

    def _call(self, action: str, function: Any, *args: Any) -> Any:
        import redis

        try:
            return function(*args)
        except redis.exceptions.ConnectionError as error:
            raise ProfileStoreError(f"cannot reach Redis at {self.url} to {action}: {error}") from None

    def save(self, profiles: ProfileSet) -> int:
        """Store ``profiles`` as a new version of this pool and make it current; returns the version."""
        version = int(self._call("number a new version", self._redis.incr, self._key("next_version")))
        profiles.version = version
        profiles.pool = self.pool
        document = json.dumps(profiles.to_dict())
        pipe = self._redis.pipeline(transaction=True)
        pipe.set(self._key(f"v{version}"), document)
        pipe.zadd(self._key("versions"), {str(version): version})
        pipe.set(self._key("current"), version)
        self._call("save profiles", pipe.execute)
        return version

    def versions(self) -> list[int]:
        return [int(v) for v in self._call("list versions", self._redis.zrange, self._key("versions"), 0, -1)]

    def current_version(self) -> int | None:
        value = self._call("read the current version", self._redis.get, self._key("current"))
        return int(value) if value is not None else None

    def load(self, version: int | None = None) -> ProfileSet:
        """The current profiles (or a given version)."""
        version = version if version is not None else self.current_version()
        if version is None:
            raise ProfileStoreError(
                f"no profiles stored for pool {self.pool!r} in {self.url}; build them with `moesaic profile`"
            )
        document = self._call("load profiles", self._redis.get, self._key(f"v{version}"))
        if document is None:
            raise ProfileStoreError(f"pool {self.pool!r} has no profile version {version}; known: {self.versions()}")
        return ProfileSet.from_dict(json.loads(document), f"redis {self._key(f'v{version}')}")

    def save_document(self, name: str, document: dict[str, Any]) -> None:
        """Store a named companion document of this pool (e.g. ``aggregators``: the measured aggregator choice)."""
        self._call(f"save {name}", self._redis.set, self._key(name), json.dumps(document))

    def load_document(self, name: str) -> dict[str, Any] | None:
        """A companion document, or None when none was stored."""
        document = self._call(f"load {name}", self._redis.get, self._key(name))
        return None if document is None else json.loads(document)

    def activate(self, version: int) -> None:
        """Roll the router to another stored version."""
        if version not in self.versions():
            raise ProfileStoreError(f"pool {self.pool!r} has no profile version {version}; known: {self.versions()}")
        self._call("switch versions", self._redis.set, self._key("current"), version)


def export_json(profiles: ProfileSet, path: str | Path) -> None:
    Path(path).write_text(json.dumps(profiles.to_dict()), encoding="utf-8")


def import_json(path: str | Path) -> ProfileSet:
    """Read a profile document; a broken file raises ``ValueError`` naming it."""
    return ProfileSet.from_dict(import_document(path), str(path))


def import_document(path: str | Path) -> dict[str, Any]:
    """A JSON object from a file; a missing or broken file raises ``ValueError`` naming it."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise ValueError(f"{path}: cannot read: {error.strerror}") from None
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not JSON: {error}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: the top level must be a JSON object")
    return data
