"""Event ids: UUIDv7 (time-ordered), fresh or derived deterministically from a Kafka record.

Fresh ids are monotonic within a process: the 74 random bits are a counter that starts at a
random value and goes up by one per id. So two events for the same entity with the same
timestamp, published in one batch (or one after the other), tie-break in the order they were
published, while ids from different processes still differ with overwhelming probability.
"""

from __future__ import annotations

import hashlib
import itertools
import secrets
import time
from functools import lru_cache

_RAND_BITS = 74
_counter = itertools.count(secrets.randbits(_RAND_BITS - 2))  # headroom: never wraps in practice


def _format_v7(unix_ms: int, rand74: int) -> str:
    """Lay out a UUIDv7 string from a 48-bit millisecond timestamp and 74 bits."""
    rand74 &= (1 << _RAND_BITS) - 1
    rand_a = rand74 >> 62
    rand_b = (rand74 & ((1 << 62) - 1)) | (0b10 << 62)
    h = f"{unix_ms & 0xFFFF_FFFF_FFFF:012x}7{rand_a:03x}{rand_b:016x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def new_event_id(unix_ms: int | None = None) -> str:
    """A fresh UUIDv7 string for ``unix_ms`` (now by default), greater than the previous one of the same ms."""
    ms = int(time.time() * 1000) if unix_ms is None else unix_ms
    return _format_v7(ms, next(_counter))


def derived_event_id(unix_ms: int, topic: str, partition: int, offset: int, index: int) -> str:
    """A UUIDv7 that is the same every time the same record position is read.

    Events published straight to Kafka without an ``eventId`` get this one, so re-reading the
    record (after a crash, in a replay) yields the same id and the merge stays idempotent.
    """
    digest = hashlib.blake2b(f"{topic}/{partition}/{offset}/{index}".encode(), digest_size=10).digest()
    return _format_v7(unix_ms, int.from_bytes(digest, "big"))


_OFFSET_BITS = 44  # 17.6 trillion records per partition
_INDEX_BITS = 17  # 131,072 envelopes per packed record
_PLACE_BITS = _RAND_BITS - _OFFSET_BITS - _INDEX_BITS


def source_event_id(unix_ms: int, topic: str, partition: int, offset: int, index: int = 0) -> str:
    """A UUIDv7 for the ``index``-th event of a source-topic record, the same every time it is read.

    Unlike :func:`derived_event_id`, the 74 bits put the record's offset first (then its index,
    then a hash of the topic and partition), so two records of one partition with the same
    timestamp tie-break in log order: a key's later record wins, as Kafka's own compaction says.
    """
    bits = (
        (offset & ((1 << _OFFSET_BITS) - 1)) << (_INDEX_BITS + _PLACE_BITS)
        | (index & ((1 << _INDEX_BITS) - 1)) << _PLACE_BITS
        | _place(topic, partition)
    )
    return _format_v7(unix_ms, bits)


@lru_cache(maxsize=4096)
def _place(topic: str, partition: int) -> int:
    """The low bits of a source event id: a hash of its record's topic and partition."""
    digest = hashlib.blake2b(f"{topic}/{partition}".encode(), digest_size=4).digest()
    return int.from_bytes(digest, "big") & ((1 << _PLACE_BITS) - 1)
