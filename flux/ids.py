"""Event ids: UUIDv7 (time-ordered), fresh or derived deterministically from a Kafka record."""

from __future__ import annotations

import hashlib
import os
import time
import uuid


def _format_v7(unix_ms: int, rand: bytes) -> str:
    """Lay out a UUIDv7 from a 48-bit millisecond timestamp and 10 bytes of entropy."""
    value = (unix_ms & 0xFFFF_FFFF_FFFF) << 80
    value |= int.from_bytes(rand[:10], "big") & ((1 << 80) - 1)
    value &= ~(0xF << 76)
    value |= 0x7 << 76  # version 7
    value &= ~(0x3 << 62)
    value |= 0x2 << 62  # RFC 4122 variant
    return str(uuid.UUID(int=value))


def new_event_id(unix_ms: int | None = None) -> str:
    """A fresh UUIDv7 string for ``unix_ms`` (now by default)."""
    ms = int(time.time() * 1000) if unix_ms is None else unix_ms
    return _format_v7(ms, os.urandom(10))


def derived_event_id(unix_ms: int, topic: str, partition: int, offset: int, index: int) -> str:
    """A UUIDv7 that is the same every time the same record position is read.

    Events published straight to Kafka without an ``eventId`` get this one, so re-reading the
    record (after a crash, in a replay) yields the same id and the merge stays idempotent.
    """
    digest = hashlib.blake2b(f"{topic}/{partition}/{offset}/{index}".encode(), digest_size=10).digest()
    return _format_v7(unix_ms, digest)
