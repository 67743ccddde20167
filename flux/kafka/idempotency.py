"""``X-Idempotency-Key``: the first answer to a keyed publish, kept durably for a while.

A client that retries a publish with the same ``X-Idempotency-Key`` and the same body gets the
first answer again; the same key with another body is a conflict. Answers live in a compacted
topic (keyed by caller scope and key, deleted after ``FLUX_IDEMPOTENCY_TTL_S``) that every Flux
process follows, so a retry may land on any process, also after a restart. Events of a keyed
request that carry no eventId get one derived from the key, so that even two racing first
attempts apply each event once (the reducer applies an eventId once).
"""

from __future__ import annotations

import hashlib
import time
import uuid
from dataclasses import dataclass
from typing import Any

import orjson

from flux.config import Settings
from flux.kafka.compacted_log import CompactedLog

MAX_KEY_LENGTH = 255
KEY_NAMESPACE = uuid.UUID("0b7f5a52-9a44-4f0b-8d55-6c1e2a9b7d31")


class KeyReused(Exception):
    """The key was used with another body."""


@dataclass(frozen=True)
class Remembered:
    """The first answer to a keyed request."""

    body_hash: str
    status: int
    answer: Any
    created_ms: int


def body_hash(body: Any) -> str:
    """A hash of a parsed JSON body that ignores whitespace and key order."""
    return hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()


def event_id_for(scope: str, key: str, index: int) -> str:
    """The eventId of the ``index``-th event of a keyed request that sent none: the same on every
    retry, and in request order (ties between equal timestamps go to the greater eventId)."""
    request = uuid.uuid5(KEY_NAMESPACE, scope + "\0" + key)
    return f"{request}-{index:08d}"


def record_key(scope: str, key: str, path: str) -> bytes:
    """Where a keyed answer is kept: per caller scope (namespace), endpoint and key."""
    return f"{scope}\0{path}\0{key}".encode()


class IdempotencyLog(CompactedLog):
    """Keyed answers, folded from the idempotency topic; entries older than the TTL are ignored."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings, settings.idempotency_topic, "idempotency")
        self._ttl_ms = settings.idempotency_ttl_s * 1000
        self._answers: dict[bytes, Remembered] = {}

    def apply(self, key: bytes, value: bytes | None) -> None:
        """Fold one record: an answer, or a tombstone."""
        if value is None:
            self._answers.pop(key, None)
            return
        try:
            raw = orjson.loads(value)
            self._answers[key] = Remembered(str(raw["h"]), int(raw["s"]), raw["a"], int(raw["t"]))
        except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
            raise ValueError(f"unreadable idempotency record: {exc}") from exc
        if len(self._answers) % 10_000 == 0:
            self._forget_expired()

    def _forget_expired(self) -> None:
        oldest = int(time.time() * 1000) - self._ttl_ms
        for key in [k for k, v in self._answers.items() if v.created_ms < oldest]:
            del self._answers[key]

    def lookup(self, where: bytes, digest: str) -> Remembered | None:
        """The first answer under ``where`` if it is still fresh; :class:`KeyReused` for another body."""
        found = self._answers.get(where)
        if found is None or found.created_ms < int(time.time() * 1000) - self._ttl_ms:
            return None
        if found.body_hash != digest:
            raise KeyReused()
        return found

    async def remember(self, where: bytes, digest: str, status: int, answer: Any) -> None:
        """Keep the answer to a keyed request (durably, acks=all)."""
        value = {"h": digest, "s": status, "a": answer, "t": int(time.time() * 1000)}
        await self.write(where, orjson.dumps(value))
