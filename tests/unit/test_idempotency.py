"""The idempotency keys' fold (flux/kafka/idempotency.py): bounded memory, expiry, answers in parts,
and the derived eventIds' seed."""

from __future__ import annotations

import gc
import tracemalloc
import uuid
from typing import Any

import orjson
import pytest

from flux.config import Settings
from flux.kafka.idempotency import (
    ENTRY_OVERHEAD_BYTES,
    PART_BYTES,
    IdempotencyLog,
    KeyReused,
    body_hash,
    record_key,
    request_seed,
)

NOW_S = 1_800_000_000.0


class LocalLog(IdempotencyLog):
    """The fold without a topic: writes are folded at once, and kept for the test to look at."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.clock = lambda: NOW_S
        self.records: list[tuple[bytes, bytes | None]] = []

    async def write_many(self, records: list[tuple[bytes, bytes | None]]) -> None:
        self.records.extend(records)
        for key, value in records:
            self.apply(key, value)


def settings(**fields: Any) -> Settings:
    return Settings(kafka_bootstrap_servers="127.0.0.1:9", **fields)


def record(created_ms: int, answer: Any, digest: str = "d") -> bytes:
    return orjson.dumps({"h": digest, "s": 200, "t": created_ms, "a": answer})


def single_answer() -> dict[str, str]:
    return {"eventId": str(uuid.uuid4()), "stream": "sensors"}


def test_the_kept_answers_stay_within_the_count_and_bytes_bounds_under_many_keys() -> None:
    log = LocalLog(settings(idempotency_cache_keys=1_000, idempotency_cache_bytes=1_048_576))
    now_ms = int(NOW_S * 1000)
    for n in range(20_000):
        log.apply(record_key("", f"k{n}", "/api/events"), record(now_ms, single_answer()))
        keys, size = log.kept()
        assert keys <= 1_000 and size <= 1_048_576
    assert log.forgotten_early == 19_000
    assert log.lookup(record_key("", "k19999", "/api/events"), "d") is not None, "the newest are kept"
    assert log.lookup(record_key("", "k0", "/api/events"), "d") is None, "the oldest are forgotten"
    big = {"results": [uuid.uuid4().hex for _ in range(8_000)]}  # about 130 kB compressed: the bytes bound binds
    for n in range(20):
        log.apply(record_key("", f"big{n}", "/api/events/batch"), record(now_ms, big))
        assert log.kept()[1] <= 1_048_576
    assert log.kept()[0] < 20


def test_answers_past_their_ttl_are_forgotten() -> None:
    log = LocalLog(settings(idempotency_ttl_s=60))
    now_ms = int(NOW_S * 1000)
    old, fresh = record_key("", "old", "/api/events"), record_key("", "fresh", "/api/events")
    log.apply(old, record(now_ms - 61_000, single_answer()))
    log.apply(fresh, record(now_ms - 1_000, single_answer()))
    assert log.kept()[0] == 1 and log.lookup(old, "d") is None and log.lookup(fresh, "d") is not None
    log.clock = lambda: NOW_S + 60
    assert log.lookup(fresh, "d") is None and log.kept() == (0, 0), "a lookup forgets what expired"


def test_the_estimate_bounds_the_memory_the_answers_take() -> None:
    log = LocalLog(settings(idempotency_cache_keys=1_000_000, idempotency_cache_bytes=1 << 40))
    now_ms = int(NOW_S * 1000)
    records = [
        (record_key("ns", uuid.uuid4().hex, "/api/events"), record(now_ms, single_answer(), body_hash(n)))
        for n in range(20_000)
    ]
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for key, value in records:
            log.apply(key, value)
        gc.collect()
        used = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    keys_bytes = sum(len(key) + 33 for key, _ in records)  # the keys are the consumer's, kept by the cache
    assert used + keys_bytes <= log.kept()[1], f"{(used + keys_bytes) / len(records):.0f} bytes a key"
    assert log.kept()[1] / len(records) < ENTRY_OVERHEAD_BYTES + 200, "about 550 bytes a single event's answer"


async def test_a_large_answer_is_written_in_parts_a_broker_takes_and_read_back_whole() -> None:
    log = LocalLog(settings())
    where = record_key("", "k", "/api/events/batch")
    answer = {"errors": [[n, "s", f"events[{n}]: {uuid.uuid4().hex * 4}"] for n in range(30_000)]}
    await log.remember(where, "d", 200, answer)
    assert len(log.records) >= 3 and all(len(k) + len(v or b"") <= PART_BYTES + 256 for k, v in log.records)
    found = log.lookup(where, "d")
    assert found is not None and found.answer == answer
    with pytest.raises(KeyReused):
        log.lookup(where, "other")


async def test_an_answer_whose_parts_are_missing_is_skipped() -> None:
    writer = LocalLog(settings())
    where = record_key("", "k", "/api/events/batch")
    await writer.remember(where, "d", 200, {"errors": [uuid.uuid4().hex * 4 for _ in range(30_000)]})
    reader = LocalLog(settings())
    *parts, head = writer.records
    for key, value in [*parts[1:], head][:-1]:
        reader.apply(key, value)
    with pytest.raises(ValueError, match="missing"):
        reader.apply(*head)
    assert reader.lookup(where, "d") is None


def test_the_first_answer_in_the_log_stands_until_it_expires() -> None:
    log = LocalLog(settings(idempotency_ttl_s=60))
    now_ms = int(NOW_S * 1000)
    where = record_key("", "k", "/api/events")
    log.apply(where, record(now_ms, {"eventId": "first"}, "d1"))
    log.apply(where, record(now_ms, {"eventId": "racing"}, "d2"))
    found = log.lookup(where, "d1")
    assert found is not None and found.answer == {"eventId": "first"}
    log.clock = lambda: NOW_S + 61
    log.apply(where, record(now_ms + 61_000, {"eventId": "later"}, "d2"))
    found = log.lookup(where, "d2")
    assert found is not None and found.answer == {"eventId": "later"}


def test_the_seed_of_derived_event_ids_names_the_request_and_its_ttl_period() -> None:
    seed = request_seed("ns", "/api/events", "k", "d", 7)
    assert seed == request_seed("ns", "/api/events", "k", "d", 7)
    others = {
        request_seed("other", "/api/events", "k", "d", 7),
        request_seed("ns", "/api/events/batch", "k", "d", 7),
        request_seed("ns", "/api/events", "k2", "d", 7),
        request_seed("ns", "/api/events", "k", "d2", 7),
        request_seed("ns", "/api/events", "k", "d", 8),
    }
    assert seed not in others and len(others) == 5
