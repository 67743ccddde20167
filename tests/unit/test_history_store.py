"""History pages over a real RocksDB store (no Kafka): order, cursors, windows, filters, the scan budget;
entities as they were at a time: folded as read, sharing the event loop, within a budget."""

from __future__ import annotations

import asyncio
import tracemalloc
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

import orjson
import pytest
import rocksdict

from agents.history import store as history_store
from agents.history.store import HistoryStore
from agents.table.store import iter_entities
from flux.model.history import HistoryQuery, history_key


class OnePartition:
    """The two things HistoryStore asks of an EntityStore, over one RocksDB."""

    def __init__(self, db: rocksdict.Rdict) -> None:
        self.db = db

    def serving_db(self, partition: int) -> rocksdict.Rdict:
        return self.db

    def active_partitions(self) -> list[int]:
        return [0]


class NothingToRebuild:
    def check_readable(self, partition: int) -> None:
        return None


@pytest.fixture
def store(tmp_path: Path) -> Any:
    db = rocksdict.Rdict(str(tmp_path / "db"), options=rocksdict.Options(raw_mode=True))
    for entity, count in (("ns/a", 30), ("ns/b", 30), ("other/c", 5)):
        for i in range(count):
            event = {
                "eventId": f"{entity}-{i:03d}",
                "stream": "odd" if i % 2 else "even",
                "source": "s",
                "timestamp": 1000 + i,
                "payload": {"entity_id": entity, "properties": {"i": i}},
            }
            db[history_key(entity, 1000 + i, event["eventId"])] = orjson.dumps(event)
    yield HistoryStore(OnePartition(db), 1, NothingToRebuild())  # type: ignore[arg-type]
    db.close()


def query(**fields: Any) -> HistoryQuery:
    base: dict[str, Any] = {
        "entity": None,
        "prefix": None,
        "since": 0,
        "until": 10**12,
        "descending": False,
        "limit": 7,
    }
    return HistoryQuery(**{**base, **fields})


def pages(store: HistoryStore, q: HistoryQuery) -> list[list[str]]:
    out, after = [], None
    while True:
        events, after = store.events(HistoryQuery(**{**q.__dict__, "after": after}))
        out.append([e["eventId"] for e in events])
        if after is None:
            return out


def flat(paged: list[list[str]]) -> list[str]:
    return [event_id for page in paged for event_id in page]


def test_an_entity_pages_in_time_order_both_ways_without_gaps_or_repeats(store: HistoryStore) -> None:
    forward = pages(store, query(entity="ns/a"))
    assert [len(p) for p in forward] == [7, 7, 7, 7, 2]
    assert flat(forward) == [f"ns/a-{i:03d}" for i in range(30)]
    backward = flat(pages(store, query(entity="ns/a", descending=True)))
    assert backward == [f"ns/a-{i:03d}" for i in reversed(range(30))]


def test_a_full_last_page_has_no_next_link(store: HistoryStore) -> None:
    assert [len(p) for p in pages(store, query(entity="other/c", limit=5))] == [5]


def test_a_window_and_a_stream_filter(store: HistoryStore) -> None:
    found = flat(pages(store, query(entity="ns/b", since=1010, until=1019, limit=3)))
    assert found == [f"ns/b-{i:03d}" for i in range(10, 20)]
    odd = flat(pages(store, query(prefix="ns/", streams=frozenset(["odd"]))))
    assert odd == [f"ns/a-{i:03d}" for i in range(1, 30, 2)] + [f"ns/b-{i:03d}" for i in range(1, 30, 2)]


def test_a_request_stops_at_the_scan_budget_and_the_cursor_goes_on(
    store: HistoryStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(history_store, "SCAN_BUDGET", 10)
    result = pages(store, query(prefix="", since=1025, limit=100))  # few events match: many keys skipped
    assert all(len(p) <= 10 for p in result) and len(result) > 1
    assert flat(result) == [f"{e}-{i:03d}" for e in ("ns/a", "ns/b") for i in range(25, 30)]


class WithEntities(OnePartition):
    """One partition whose table holds entity keys beside the history (what ``page_at`` walks)."""

    def iter_partition(self, db: rocksdict.Rdict, prefix: bytes, after: bytes | None = None) -> Any:
        return iter_entities(db, prefix, after)


def long_history(tmp_path: Path, entities: int, events: int, pad: int = 0) -> tuple[HistoryStore, rocksdict.Rdict]:
    """A store whose entities ``long/0``... have ``events`` events each (timestamps 1000, 1001, ...)."""
    db = rocksdict.Rdict(str(tmp_path / "long"), options=rocksdict.Options(raw_mode=True))
    for n in range(entities):
        entity = f"long/{n}"
        db[entity.encode()] = b"{}"
        for i in range(events):
            event_id = f"{n}-{i:07d}"
            event = {
                "eventId": event_id,
                "stream": "s",
                "source": "s",
                "timestamp": 1000 + i,
                "payload": {"entity_id": entity, "properties": {"i": i, "pad": "x" * pad}},
            }
            db[history_key(entity, 1000 + i, event_id)] = orjson.dumps(event)
    return HistoryStore(WithEntities(db), 1, NothingToRebuild()), db  # type: ignore[arg-type]


async def steps_of_others_during(work: Awaitable[Any]) -> tuple[Any, int]:
    """``work``'s result and how many times another task ran while it was being done."""
    done = False
    steps = 0

    async def other() -> None:
        nonlocal steps
        while not done:
            steps += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(other())
    await asyncio.sleep(0)
    steps = 0
    try:
        result = await work
    finally:
        done = True
        await task
    return result, steps


async def test_an_entity_at_a_time_is_folded_as_its_history_is_read_not_loaded_whole(tmp_path: Path) -> None:
    store, db = long_history(tmp_path, 1, 20_000, pad=200)
    tracemalloc.start()
    try:
        entity = await store.entity_at("long/0", 1000 + 14_999)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        db.close()
    assert entity is not None and entity["properties"]["i"] == 14_999
    assert peak < 2_000_000, f"{peak} bytes at the peak: 15,000 events of ~0.4 KB were held at once"


async def test_a_long_fold_hands_the_event_loop_back_as_it_goes(tmp_path: Path) -> None:
    store, db = long_history(tmp_path, 1, 10 * history_store.YIELD_EVERY)
    try:
        entity, steps = await steps_of_others_during(store.entity_at("long/0", 10**6))
    finally:
        db.close()
    assert entity is not None and entity["properties"]["i"] == 10 * history_store.YIELD_EVERY - 1
    assert steps >= 9, "another task runs after every YIELD_EVERY events"


async def test_a_page_at_a_time_stops_at_its_budget_with_a_frontier_and_lets_other_tasks_run(tmp_path: Path) -> None:
    store, db = long_history(tmp_path, 30, 100)
    try:
        page, steps = await steps_of_others_during(store.page_at("long/", 10**6, 1_000, 1_050))
        rest = await store.page_at("long/", 10**6, 1_000, 10**6, after=page.frontier)
    finally:
        db.close()
    assert len(page.items) == 11 and page.frontier == page.items[-1][0] and page.scanned == 1_100
    assert steps >= 1, "the loop was handed back while 1,100 events were folded"
    assert [i for i, _ in page.items + rest.items] == sorted(f"long/{n}" for n in range(30))
    assert rest.frontier is None and rest.scanned == 1_900
