"""The request journal: every answered request, for audit and replay, in a Redis stream.

Each request becomes one stream entry (``XADD <stream> MAXLEN ~ <maxlen>``, so Redis trims
old entries cheaply) with a single field ``entry``: the ``JournalEntry`` as JSON. Entry ids are
the stream's (``<ms>-<seq>``), so ``read(after=ID)`` resumes exactly where a reader stopped.

Without Redis the journal is a bounded deque in this process, lost at exit (``where`` says so):
at most ``memory_maxlen`` entries and ``memory_max_bytes`` of their JSON, the oldest going first, so
large requests cannot grow the server's memory without bound. While a configured Redis is down,
entries wait in that deque and are written to the stream, in order, on the first call after Redis
answers again: an outage loses nothing unless it outlasts the deque.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections import deque
from dataclasses import dataclass, field, fields
from typing import Any

from orchestrator.server.service.redis_link import RedisLink

log = logging.getLogger(__name__)

FIELD = "entry"


@dataclass
class JournalEntry:
    """One request as it was asked and answered. ``entry_id`` is set when read back."""

    request_id: str
    key_name: str
    model: str
    request: dict[str, Any]
    status: int
    response: dict[str, Any] | None = None
    error: str | None = None
    started: float = field(default_factory=time.time)
    duration_ms: float = 0.0
    cache_hit: bool = False
    surface: str = "chat.completions"  # the way in: chat.completions, route, routing.evaluate, mcp.ask, ...
    entry_id: str | None = None

    def to_json(self) -> str:
        # shallow: json.dumps reads the nested request and response as they are (asdict would deep-copy
        # them first, a measurable share of a fast request's time)
        document = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "entry_id"}
        return json.dumps(document, separators=(",", ":"), ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str, entry_id: str | None = None) -> JournalEntry:
        """Parse a stored entry; fields this version does not know are ignored, missing ones raise ValueError."""
        document = json.loads(text)
        if not isinstance(document, dict):
            raise ValueError("a journal entry must be a JSON object")
        known = {f.name for f in fields(cls)} - {"entry_id"}
        try:
            return cls(**{key: value for key, value in document.items() if key in known}, entry_id=entry_id)
        except TypeError as error:
            raise ValueError(f"not a journal entry: {error}") from None


ENTRY_ID = re.compile(r"^\d{1,20}(-\d{1,20})?$")


def _id_order(entry_id: str) -> tuple[int, int]:
    milliseconds, _, sequence = entry_id.partition("-")
    return int(milliseconds), int(sequence or 0)


def check_entry_id(entry_id: str) -> str:
    """An entry id as given by a user (``--since``); raises ValueError with the expected form."""
    if not ENTRY_ID.match(entry_id):
        raise ValueError(f"{entry_id!r} is not a journal entry id; ids look like 1717171717171-0 (see `journal tail`)")
    return entry_id


class RequestJournal:
    """Append-only record of requests; a Redis stream, or a bounded in-process deque."""

    def __init__(
        self,
        link: RedisLink,
        stream: str = "moesaic:journal",
        maxlen: int = 100_000,
        memory_maxlen: int = 1_000,
        memory_max_bytes: int = 64 * 1024 * 1024,
    ) -> None:
        if maxlen < 1 or memory_maxlen < 1 or memory_max_bytes < 1:
            raise ValueError(
                f"journal maxlen, memory_maxlen and memory_max_bytes must be at least 1, "
                f"got {maxlen}, {memory_maxlen}, {memory_max_bytes}"
            )
        self.link = link
        self.stream = stream
        self.maxlen = maxlen
        self.memory_max_bytes = memory_max_bytes
        self._memory: deque[JournalEntry] = deque(maxlen=memory_maxlen)
        self._sizes: dict[int, int] = {}  # id(entry) -> its JSON's length, for the entries in the deque
        self._memory_bytes = 0
        self._drain_lock = asyncio.Lock()
        self._last_id = (0, 0)
        self.dropped = 0  # entries pushed out of the full deque before Redis took them

    @property
    def where(self) -> str:
        """Where entries go now, in words (for the start-up log and health output)."""
        if self.link.client is None:
            return f"in process (last {self._memory.maxlen} entries, lost at exit)"
        if self.link.status != "connected":
            return f"in process until Redis answers ({len(self._memory)} waiting)"
        return f"redis stream {self.stream!r} (about {self.maxlen} entries)"

    async def append(self, entry: JournalEntry) -> str | None:
        """Record ``entry``; returns its id. Never raises for a store failure."""
        text = entry.to_json()
        if await self._drain():
            written, entry_id = await self.link.attempt("append to the journal", lambda r: self._xadd(r, text))
            if written:
                return str(entry_id)
        entry.entry_id = self._next_memory_id()
        self._keep(entry, len(text))
        return entry.entry_id

    def _keep(self, entry: JournalEntry, size: int) -> None:
        """Append to the in-process deque, dropping the oldest entries beyond its count and byte bounds."""
        while self._memory and (
            len(self._memory) >= (self._memory.maxlen or 0) or self._memory_bytes + size > self.memory_max_bytes
        ):
            self._forget(self._memory.popleft())
            self.dropped += 1
        self._memory.append(entry)
        self._sizes[id(entry)] = size
        self._memory_bytes += size

    def _forget(self, entry: JournalEntry) -> None:
        self._memory_bytes -= self._sizes.pop(id(entry), 0)

    @property
    def memory_bytes(self) -> int:
        """Bytes of JSON held by the in-process deque now."""
        return self._memory_bytes

    async def read(self, count: int, after: str = "-") -> list[JournalEntry]:
        """Up to ``count`` entries after the id ``after`` (``-``: from the oldest), oldest first."""
        if count < 1:
            return []
        start = "-" if after == "-" else f"({check_entry_id(after)}"
        if await self._drain():
            ok, rows = await self.link.attempt("read the journal", lambda r: r.xrange(self.stream, start, "+", count))
            if ok:
                return self._parse(rows)
        floor = (-1, -1) if after == "-" else _id_order(after)
        return [entry for entry in self._memory if _id_order(entry.entry_id or "0") > floor][:count]

    async def latest(self, count: int) -> list[JournalEntry]:
        """The ``count`` most recent entries, oldest first."""
        if count < 1:
            return []
        if await self._drain():
            ok, rows = await self.link.attempt("read the journal", lambda r: r.xrevrange(self.stream, "+", "-", count))
            if ok:
                return list(reversed(self._parse(rows)))
        return list(self._memory)[-count:]

    async def _xadd(self, client: Any, text: str) -> Any:
        return await client.xadd(self.stream, {FIELD: text}, maxlen=self.maxlen, approximate=True)

    async def _drain(self) -> bool:
        """Move entries kept during an outage into the stream, in order. False: use the deque now."""
        if self.link.client is None:
            return False
        async with self._drain_lock:  # one drain at a time, and appends wait for it: order is kept
            if not self._memory:
                return True
            waiting = list(self._memory)

            async def write_all(client: Any) -> None:
                async with client.pipeline(transaction=True) as pipe:
                    for entry in waiting:
                        pipe.xadd(self.stream, {FIELD: entry.to_json()}, maxlen=self.maxlen, approximate=True)
                    await pipe.execute()

            written, _ = await self.link.attempt("write the journal kept during the outage", write_all)
            if written:
                done = {id(entry) for entry in waiting}
                for entry in waiting:
                    self._forget(entry)
                self._memory = deque((e for e in self._memory if id(e) not in done), maxlen=self._memory.maxlen)
                log.warning("journal: %d entries kept in process during the Redis outage are now in Redis", len(done))
            return written

    def _parse(self, rows: list[tuple[str, dict[str, str]]]) -> list[JournalEntry]:
        entries = []
        for entry_id, values in rows:
            try:
                entries.append(JournalEntry.from_json(values[FIELD], entry_id))
            except (KeyError, ValueError, TypeError) as error:
                log.warning("journal entry %s in %s is not readable (%s); skipped", entry_id, self.stream, error)
        return entries

    def _next_memory_id(self) -> str:
        """Stream-like ids in process: ``<ms>-<seq>``, strictly increasing."""
        now = int(time.time() * 1000)
        milliseconds, sequence = self._last_id
        self._last_id = (now, 0) if now > milliseconds else (milliseconds, sequence + 1)
        return f"{self._last_id[0]}-{self._last_id[1]}"
