"""History pages over a real RocksDB store (no Kafka): order, cursors, windows, filters, the scan budget."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
import rocksdict

from agents.history import store as history_store
from agents.history.store import HistoryStore
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
