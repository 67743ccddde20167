"""``X-Idempotency-Key``: the first answer to a keyed publish, kept durably for a while.

A client that retries a publish with the same ``X-Idempotency-Key`` and the same body gets the
first answer again; the same key with another body is a conflict. Answers live in a compacted
topic (keyed by caller scope, endpoint and key, deleted after ``FLUX_IDEMPOTENCY_TTL_S``) that
every HTTP process follows, so a retry may land on any process, also after a restart.

**Records.** An answer up to :data:`INLINE_BYTES` is one record under the key. A larger one is
compressed and split into part records of at most :data:`PART_BYTES` (each under a key of its
own, so compaction never mixes two writers' parts), followed by the key's record, which names
them; so storing an answer never exceeds the broker's ``max.message.bytes`` or the producer's
``max_request_size`` (1 MiB by default), whatever the batch. The routes keep batch answers small
in the first place (:mod:`api.routes.idempotent` stores only what the body cannot give again).

**Derived eventIds.** Events of a keyed request that carry no eventId get one derived from
:func:`request_seed`: the scope, the endpoint, the key, the body's hash and the TTL period the
request arrives in (``now // TTL``). A retry (the same body, soon after) gets the same ids, so even
two racing first attempts, or a retry after a 503, apply each event once. A key used again after
its TTL arrives in a later period (its answer was written at least a TTL ago), so its events get
new ids and are folded, not dropped by the reducer's applied-once marks; a key used again with
another body gets other ids too. The one gap: a retry that is not answered from a record (its
first attempt failed, or its record was forgotten, see below) and that falls on the other side
of a period boundary gets new ids; events that carry their own eventId (as :mod:`flux.client`
sends them) are applied once whatever happens.

**Memory.** Each process keeps the answers of at most ``FLUX_IDEMPOTENCY_CACHE_KEYS`` keys and
``FLUX_IDEMPOTENCY_CACHE_BYTES`` bytes, oldest forgotten first, and forgets every answer past its
TTL. An answer is kept as its JSON (compressed beyond :data:`COMPRESS_ABOVE` bytes) and costs
about :data:`ENTRY_OVERHEAD_BYTES` plus its key and that JSON. A key forgotten before its TTL is
processed again on a retry (with the same derived eventIds, so still applied once, but the answer
is not replayed and the body not compared); :attr:`IdempotencyLog.forgotten_early` counts them.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
import zlib
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from flux.config import Settings
from flux.kafka.compacted_log import CompactedLog

MAX_KEY_LENGTH = 255
KEY_NAMESPACE = uuid.UUID("0b7f5a52-9a44-4f0b-8d55-6c1e2a9b7d31")
INLINE_BYTES = 256 * 1024  # an answer up to this size is stored in the key's record itself
PART_BYTES = 512 * 1024  # larger ones: compressed, in parts of this size (the broker takes 1 MiB a record)
PART_MARK = b"\x00"  # the first byte of a part record's value (an answer record is a JSON object)
PENDING_WRITES = 16  # parts of at most this many large answers wait for their key's record
COMPRESS_ABOVE = 1024  # answers kept in memory compressed beyond this many bytes of JSON
ENTRY_OVERHEAD_BYTES = 400  # memory of a kept answer beside its key and JSON (tests/unit/test_idempotency.py)


class KeyReused(Exception):
    """The key was used with another body."""


@dataclass(frozen=True, slots=True)
class Remembered:
    """The first answer to a keyed request, as its JSON (zlib-compressed when ``compressed``)."""

    body_hash: str
    status: int
    created_ms: int
    blob: bytes
    compressed: bool

    @property
    def answer(self) -> Any:
        """The answer, decoded."""
        return orjson.loads(zlib.decompress(self.blob) if self.compressed else self.blob)


def body_hash(body: Any) -> str:
    """A hash of a parsed JSON body that ignores whitespace and key order."""
    return hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()


def request_seed(scope: str, path: str, key: str, digest: str, period: int) -> str:
    """What the derived eventIds of a keyed request start with: the same for a retry of it (same
    scope, endpoint, key and body, same TTL period), another one for any other request."""
    return str(uuid.uuid5(KEY_NAMESPACE, "\0".join((scope, path, key, digest, str(period)))))


def event_id_for(seed: str, index: int) -> str:
    """The eventId of the ``index``-th event of a keyed request that sent none: the same on every
    retry, and in request order (ties between equal timestamps go to the greater eventId)."""
    return f"{seed}-{index:08d}"


def record_key(scope: str, key: str, path: str) -> bytes:
    """Where a keyed answer is kept: per caller scope (namespace), endpoint and key."""
    return f"{scope}\0{path}\0{key}".encode()


class IdempotencyLog(CompactedLog):
    """Keyed answers, folded from the idempotency topic into a bounded cache; see the module docstring."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings, settings.idempotency_topic, "idempotency")
        self._ttl_ms = settings.idempotency_ttl_s * 1000
        self._max_keys = settings.idempotency_cache_keys
        self._max_bytes = settings.idempotency_cache_bytes
        self._answers: OrderedDict[bytes, Remembered] = OrderedDict()  # in log order: oldest first
        self._bytes = 0
        self._parts: OrderedDict[bytes, dict[int, bytes]] = OrderedDict()  # write id -> parts read so far
        self.forgotten_early = 0  # answers forgotten before their TTL to stay within the bounds
        self.clock: Callable[[], float] = time.time

    # -- time ---------------------------------------------------------------------------
    def now_ms(self) -> int:
        """Now, in Unix milliseconds (:attr:`clock`)."""
        return int(self.clock() * 1000)

    def period(self) -> int:
        """The TTL period now falls in (what :func:`request_seed` takes)."""
        return self.now_ms() // self._ttl_ms

    # -- folding ------------------------------------------------------------------------
    def apply(self, key: bytes, value: bytes | None) -> None:
        """Fold one record: an answer, a part of a large one, or a tombstone."""
        if value is None:
            self._forget(key)
            return
        if value[:1] == PART_MARK:
            self._keep_part(key, value[1:])
            return
        try:
            raw = orjson.loads(value)
            digest, status, created = str(raw["h"]), int(raw["s"]), int(raw["t"])
            if "z" in raw:
                blob, compressed = self._assemble(str(raw["z"][0]).encode(), int(raw["z"][1])), True
            else:
                blob, compressed = bytes(memoryview(orjson.dumps(raw["a"]))), False  # orjson's spare room: not kept
        except (orjson.JSONDecodeError, KeyError, TypeError, IndexError) as exc:
            raise ValueError(f"unreadable idempotency record: {exc}") from exc
        if not compressed and len(blob) > COMPRESS_ABOVE:
            blob, compressed = zlib.compress(blob), True
        now = self.now_ms()
        existing = self._answers.get(key)
        if existing is not None:
            if existing.created_ms >= now - self._ttl_ms:
                return  # a racing attempt's answer: the first one in the log stands
            self._forget(key)
        entry = Remembered(digest, status, created, blob, compressed)
        self._answers[key] = entry
        self._bytes += self._size(key, entry)
        self._trim(now)

    def _keep_part(self, key: bytes, data: bytes) -> None:
        try:
            _, write_id, index = key.rsplit(b"\0", 2)
            number = int(index)
        except ValueError as exc:
            raise ValueError(f"unreadable idempotency part key: {exc}") from exc
        self._parts.setdefault(write_id, {})[number] = data
        while len(self._parts) > PENDING_WRITES:  # a writer that died between parts and answer
            self._parts.popitem(last=False)

    def _assemble(self, write_id: bytes, count: int) -> bytes:
        parts = self._parts.pop(write_id, {})
        if len(parts) != count or any(i not in parts for i in range(count)):
            raise ValueError(f"{count - len(parts)} of {count} parts of a large answer are missing")
        return b"".join(parts[i] for i in range(count))

    @staticmethod
    def _size(key: bytes, entry: Remembered) -> int:
        return ENTRY_OVERHEAD_BYTES + len(key) + len(entry.blob)

    def _forget(self, key: bytes) -> None:
        entry = self._answers.pop(key, None)
        if entry is not None:
            self._bytes -= self._size(key, entry)

    def _trim(self, now: int) -> None:
        """Forget answers past their TTL, then the oldest until within the bounds."""
        oldest = now - self._ttl_ms
        while self._answers:
            key, entry = next(iter(self._answers.items()))
            expired = entry.created_ms < oldest
            if not expired and len(self._answers) <= self._max_keys and self._bytes <= self._max_bytes:
                return
            if not expired:
                self.forgotten_early += 1
            self._forget(key)

    def kept(self) -> tuple[int, int]:
        """How many answers this process keeps, and about how many bytes they take."""
        return len(self._answers), self._bytes

    # -- the routes' side ---------------------------------------------------------------
    def lookup(self, where: bytes, digest: str) -> Remembered | None:
        """The first answer under ``where`` if it is still fresh; :class:`KeyReused` for another body."""
        now = self.now_ms()
        self._trim(now)
        found = self._answers.get(where)
        if found is None or found.created_ms < now - self._ttl_ms:
            return None
        if found.body_hash != digest:
            raise KeyReused()
        return found

    async def remember(self, where: bytes, digest: str, status: int, answer: Any) -> None:
        """Keep the answer to a keyed request (durably, acks=all), in parts if it is large."""
        head: dict[str, Any] = {"h": digest, "s": status, "t": self.now_ms()}
        blob = orjson.dumps(answer)
        if len(blob) <= INLINE_BYTES:
            await self.write(where, orjson.dumps({**head, "a": orjson.Fragment(blob)}))
            return
        packed = await asyncio.to_thread(zlib.compress, blob)
        write_id = uuid.uuid4().hex
        parts = [packed[at : at + PART_BYTES] for at in range(0, len(packed), PART_BYTES)]
        records: list[tuple[bytes, bytes | None]] = [
            (b"\0".join((where, write_id.encode(), str(i).encode())), PART_MARK + part) for i, part in enumerate(parts)
        ]
        records.append((where, orjson.dumps({**head, "z": [write_id, len(parts)]})))
        await self.write_many(records)
