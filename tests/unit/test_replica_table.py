"""An HTTP process's view of the reducer's table: RocksDB secondaries, the change-feed overlay, the board."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson
import pytest
import rocksdict

from agents.history.rebuild import HistoryRebuilding
from agents.table.applied_board import AppliedBoard
from agents.table.replica import RebuildStatus, ReplicaTable
from agents.table.store import HISTORY_OFFSET_KEY, NAMESPACE_COUNT_PREFIX, STATS_KEY
from flux.model.changes import ChangeRecord, EntityChange
from flux.model.events import validate_event
from flux.model.partitioning import partition_for
from flux.model.reducer import apply_event, new_state, rfc3339_ms
from flux.model.state import PartitionUnavailable, Readiness, TableStatus

PARTITIONS = 2


class Primary:
    """The reducer's side: one RocksDB store per partition, written as the reducer writes them."""

    def __init__(self, root: Path) -> None:
        self.paths = {p: str(root / f"entities-{p}.db") for p in range(PARTITIONS)}
        self.dbs = {
            p: rocksdict.Rdict(path, options=rocksdict.Options(raw_mode=True)) for p, path in self.paths.items()
        }
        self.board = AppliedBoard.create(root / "applied.board", PARTITIONS)
        self.status = TableStatus(
            recovered=True,
            active=list(range(PARTITIONS)),
            paths=dict(self.paths),
            readiness=Readiness(True, True, True, list(range(PARTITIONS))),
            entities=0,
        )

    def write(self, entity_id: str, properties: dict[str, Any], at: int, applied: int) -> int:
        partition = partition_for(entity_id, PARTITIONS)
        state = new_state()
        event = {
            "stream": "s",
            "source": "t",
            "timestamp": at,
            "payload": {"entity_id": entity_id, "properties": properties},
        }
        apply_event(state, validate_event(event, now_ms=at))
        state["o"] = applied
        batch = rocksdict.WriteBatch(raw_mode=True)
        batch.put(entity_id.encode(), orjson.dumps(state))
        batch.put(HISTORY_OFFSET_KEY, str(applied).encode())
        self.dbs[partition].write(batch)
        return partition

    def close(self) -> None:
        for db in self.dbs.values():
            db.close()
        self.board.close()


@pytest.fixture
def primary(tmp_path: Path) -> Any:
    made = Primary(tmp_path / "primary")
    yield made
    made.close()


def replica_of(primary: Primary, tmp_path: Path) -> ReplicaTable:
    board = AppliedBoard.open(primary.board.path, PARTITIONS)
    return ReplicaTable(PARTITIONS, lambda: primary.status, board, tmp_path / "secondary")


def change(entity_id: str, properties: dict[str, Any] | None, at: int, applied: int) -> ChangeRecord:
    entity = None if properties is None else {"id": entity_id, "properties": properties, "lastUpdated": rfc3339_ms(at)}
    partition = partition_for(entity_id, PARTITIONS)
    return ChangeRecord(partition, applied, 1, 1, ["test"], [EntityChange(entity_id, applied, [], entity)])


def test_a_read_sees_what_another_process_relayed_before_it_arrived(primary: Primary, tmp_path: Path) -> None:
    replica = replica_of(primary, tmp_path)
    assert replica.get("e1") is None
    partition = primary.write("e1", {"t": 1}, 1000, applied=5)
    primary.board.relayed(partition, 3, 5)  # HTTP process 3 told a client: this process's relay is behind
    assert replica.get("e1") == {"id": "e1", "properties": {"t": 1}, "lastUpdated": rfc3339_ms(1000)}
    found = replica.lookup("e1")
    assert found is not None and found.last_timestamp == 1000 and found.applied == 5


def test_a_change_from_the_feed_answers_without_a_catch_up(primary: Primary, tmp_path: Path) -> None:
    replica = replica_of(primary, tmp_path)
    replica.get("e1")  # opens the partition's secondary
    replica.on_change(change("e1", {"t": 0}, 900, applied=1))
    replica._catch_up(partition_for("e1", PARTITIONS), replica._open[partition_for("e1", PARTITIONS)])
    before = replica.catch_ups
    primary.write("e1", {"t": 2}, 2000, applied=7)
    replica.on_change(change("e1", {"t": 2}, 2000, applied=7))
    found = replica.lookup("e1")
    assert found is not None and found.entity["properties"] == {"t": 2} and found.last_timestamp == 2000
    assert replica.catch_ups == before


def test_a_deletion_from_the_feed_hides_the_entity(primary: Primary, tmp_path: Path) -> None:
    replica = replica_of(primary, tmp_path)
    primary.write("e1", {"t": 1}, 1000, applied=3)
    assert replica.get("e1") is not None
    partition = partition_for("e1", PARTITIONS)
    replica.on_change(change("e1", {"t": 1}, 1000, applied=3))
    replica._catch_up(partition, replica._open[partition])
    replica.on_change(change("e1", None, 1100, applied=4))
    assert replica.get("e1") is None


def test_a_feed_record_older_than_the_secondary_is_ignored(primary: Primary, tmp_path: Path) -> None:
    replica = replica_of(primary, tmp_path)
    primary.write("e1", {"t": 3}, 3000, applied=9)
    assert replica.get("e1") is not None
    replica.on_change(change("e1", {"t": 1}, 1000, applied=2))
    assert replica.get("e1") == {"id": "e1", "properties": {"t": 3}, "lastUpdated": rfc3339_ms(3000)}


def test_the_periodic_catch_up_empties_the_overlay(primary: Primary, tmp_path: Path) -> None:
    async def scenario() -> None:
        replica = replica_of(primary, tmp_path)
        await replica.start()
        try:
            replica.get("e1")
            partition = partition_for("e1", PARTITIONS)
            primary.write("e1", {"t": 1}, 1000, applied=3)
            replica.on_change(change("e1", {"t": 1}, 1000, applied=3))
            await asyncio.sleep(0.35)
            state = replica._open[partition]
            assert state.base == 3 and state.overlay == {} and state.fed_trusted
        finally:
            await replica.stop()

    asyncio.run(scenario())


def test_settle_waits_for_this_processs_relay_to_reach_the_others(primary: Primary, tmp_path: Path) -> None:
    async def scenario() -> None:
        replica = replica_of(primary, tmp_path)
        partition = partition_for("e1", PARTITIONS)
        replica.get("e1")
        replica.on_change(change("e1", {"t": 0}, 500, applied=1))
        replica._catch_up(partition, replica._open[partition])
        primary.write("e1", {"t": 1}, 1000, applied=3)
        primary.board.relayed(partition, 2, 3)  # another process relayed it first
        asyncio.get_running_loop().call_later(0.01, replica.on_change, change("e1", {"t": 1}, 1000, applied=3))
        before = replica.catch_ups
        await replica.settle(partition)
        assert replica.get("e1") == {"id": "e1", "properties": {"t": 1}, "lastUpdated": rfc3339_ms(1000)}
        assert replica.catch_ups == before

    asyncio.run(scenario())


def test_scans_read_a_caught_up_secondary(primary: Primary, tmp_path: Path) -> None:
    replica = replica_of(primary, tmp_path)
    assert list(replica.iter_prefix("")) == []
    for n in range(5):
        partition = primary.write(f"acme/e{n}", {"n": n}, 1000 + n, applied=n + 1)
        primary.board.relayed(partition, 1, n + 1)
    assert [stored.entity["id"] for stored in replica.iter_prefix("acme/")] == [f"acme/e{n}" for n in range(5)]


def test_namespace_counts_come_from_the_running_counts(primary: Primary, tmp_path: Path) -> None:
    replica = replica_of(primary, tmp_path)
    for partition, db in primary.dbs.items():
        db.put(STATS_KEY, orjson.dumps([10, 3, True]))
        db.put(NAMESPACE_COUNT_PREFIX + b"acme", str(partition + 2).encode())
    assert replica.count_namespace("acme") == 2 + 3
    assert replica.count_namespace("other") == 0


def test_a_partition_not_served_or_not_recovered_is_unavailable(primary: Primary, tmp_path: Path) -> None:
    replica = replica_of(primary, tmp_path)
    partition = partition_for("e1", PARTITIONS)
    primary.status.active = [p for p in range(PARTITIONS) if p != partition]
    with pytest.raises(PartitionUnavailable):
        replica.get("e1")
    primary.status.active = list(range(PARTITIONS))
    primary.status.recovered = False
    with pytest.raises(PartitionUnavailable):
        replica.get("e1")


def test_a_rebalance_reopens_the_secondaries(primary: Primary, tmp_path: Path) -> None:
    replica = replica_of(primary, tmp_path)
    replica.get("e1")
    opened = dict(replica._open)
    primary.status.generation += 1
    primary.write("e1", {"t": 1}, 1000, applied=2)
    assert replica.get("e1") is not None
    assert all(replica._open[p] is not opened.get(p) for p in replica._open)


def test_history_reads_wait_for_a_rebuild(primary: Primary) -> None:
    primary.status.rebuilding = {1: (10, 100)}
    status = RebuildStatus(lambda: primary.status)
    status.check_readable(0)
    with pytest.raises(HistoryRebuilding):
        status.check_readable(1)


def test_the_board_is_shared_and_never_moves_back(tmp_path: Path) -> None:
    board = AppliedBoard.create(tmp_path / "b", 3)
    reader = AppliedBoard.open(tmp_path / "b", 3)
    assert [reader.target(p) for p in range(3)] == [-1, -1, -1]
    reader.relayed(2, 0, 7)
    board.relayed(2, 5, 9)
    reader.relayed(2, 0, 3)
    assert board.target(2) == reader.target(2) == 9 and board.target(1) == -1
    board.close()
    reader.close()


def test_a_rewrite_without_a_new_offset_is_read_at_once(primary: Primary, tmp_path: Path) -> None:
    replica = replica_of(primary, tmp_path)
    partition = primary.write("e1", {"t": 1}, 1000, applied=4)
    assert replica.get("e1") is not None
    primary.dbs[partition].delete(b"e1")  # a replay's switch: the state changes, the offset stays
    primary.board.bump(partition)
    assert replica.get("e1") is None
    assert [stored.entity["id"] for stored in replica.iter_prefix("e")] == []


def test_the_board_counts_rewrites(tmp_path: Path) -> None:
    board = AppliedBoard.create(tmp_path / "b", 2)
    reader = AppliedBoard.open(tmp_path / "b", 2)
    board.bump(1)
    board.bump(1)
    reader.relayed(0, 0, 7)
    assert (reader.epoch(0), reader.epoch(1), board.target(0)) == (0, 2, 7)
    board.close()
    reader.close()


def test_a_read_never_shows_less_than_another_process_of_the_node_showed(primary: Primary, tmp_path: Path) -> None:
    # Found by the soak (make soak) after a broker's kill -9 stalled the change-feed relays: a list answered by one
    # HTTP process showed an entity's newest state, a list answered by another process of the same node a moment
    # later an older one. A secondary catches up to whatever the primary holds, which can be past what the relays
    # delivered (the board's target), and a process whose secondary is not behind that target does not catch up.
    def process(index: int) -> ReplicaTable:
        board = AppliedBoard.open(primary.board.path, PARTITIONS)
        return ReplicaTable(PARTITIONS, lambda: primary.status, board, tmp_path / f"p{index}", index=index)

    first, second = process(0), process(1)
    primary.write("acme/e1", {"seq": 1}, 1000, applied=3)
    assert [s.entity["properties"] for s in second.iter_prefix("acme/")] == [{"seq": 1}]
    primary.write("acme/e1", {"seq": 2}, 2000, applied=4)  # folded; no relay has delivered it yet
    assert [s.entity["properties"] for s in first.iter_prefix("acme/")] == [{"seq": 2}]
    assert [s.entity["properties"] for s in second.iter_prefix("acme/")] == [{"seq": 2}]  # was {"seq": 1}: back in time
    partition = primary.write("acme/e1", {"seq": 3}, 3000, applied=5)
    second._catch_up(partition, second._open[partition])  # its periodic catch-up: it may show seq 3 now
    assert second.get("acme/e1")["properties"] == {"seq": 3}  # type: ignore[index]
    assert first.get("acme/e1")["properties"] == {"seq": 3}, "a single read too"  # type: ignore[index]
