"""The entity table's storage, read and written in batches.

Faust owns the table: its RocksDB database per partition, its compacted changelog topic, recovery
from that changelog on start, and partition assignment. Per-key ``table[k] = v`` costs ~250 us
(one changelog send, one RocksDB put and one offset put per key), so writes here go one flush at
a time instead: the entity states a batch changed are sent to the changelog (acknowledged before
the batch's source offsets can be committed: :meth:`EntityStore.changelog_written`), written to the
partition's RocksDB in one ``WriteBatch``, and the partition's persisted changelog offset is
recorded once. Recovery and
standby replicas read the same changelog records Faust would have written itself.

This module is the only place that touches the Faust store's internals (``_dbs``,
``_db_for_partition``); the HTTP API sees it through :class:`flux.model.state.StateReader`.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, NamedTuple

import orjson
import rocksdict

from agents.table.applied_board import AppliedBoard
from agents.table.catch_up import CatchUp
from flux.model.partitioning import partition_for
from flux.model.reducer import State, exists, to_entity
from flux.model.state import PartitionUnavailable, Readiness, StoredEntity

log = logging.getLogger(__name__)

OFFSET_KEY = b"__faust\0offset__"
STATS_KEY = b"__flux\0stats__"
HISTORY_OFFSET_KEY = b"__flux\0history-offset__"  # local only: the events-topic offset the history reached
NAMESPACE_COUNT_PREFIX = b"__flux\0ns\0"  # + namespace: existing entities 'namespace/...' of the partition
INTERNAL_KEY_PREFIXES = (b"__faust\0", b"__flux\0")


class PartitionStats(NamedTuple):
    """Running totals of one partition, stored (and changelogged) under :data:`STATS_KEY`.

    ``namespaces_counted`` says the partition also keeps per-namespace entity counts (under
    :data:`NAMESPACE_COUNT_PREFIX`); a store written before it did is counted once by a scan.
    ``applied`` travels with the states through the changelog, so a table recovered on another node
    knows how far its states go, even before its reducer folded anything.
    """

    events: int
    entities: int
    namespaces_counted: bool = False
    applied: int = -1  # the events-topic offset the partition's states are folded up to (-1: not recorded)


def namespace_key(entity_key: bytes) -> bytes | None:
    """The namespace part of an entity key ``namespace/...``, None without one."""
    slash = entity_key.find(b"/")
    return entity_key[:slash] if slash > 0 else None


def decode_state(raw: bytes) -> State:
    """A stored entity state."""
    state: State = orjson.loads(raw)
    return state


def iter_entities(db: rocksdict.Rdict, prefix: bytes, after: bytes | None = None) -> Iterator[tuple[bytes, bytes]]:
    """(key, value) of the entities of one partition's store whose id starts with ``prefix``
    (and, given ``after``, sorts after it), in key order, skipping internal keys."""
    it = db.iter()
    it.seek(prefix if after is None or after < prefix else after)
    if after is not None and it.valid() and it.key() == after:
        it.next()
    while it.valid():
        key = it.key()
        if not key.startswith(prefix):
            break
        internal = next((p for p in INTERNAL_KEY_PREFIXES if key.startswith(p)), None)
        if internal is not None:  # history, marks, totals: skip the whole range in one seek
            it.seek(internal[:-1] + b"\x01")
            continue
        yield key, it.value()
        it.next()


def existing_entities(dbs: Sequence[rocksdict.Rdict], prefix: str, after: str | None) -> Iterator[StoredEntity]:
    """The existing entities of several partition stores whose ids start with ``prefix`` (and sort
    after ``after``), merged in id order, lazily (one RocksDB iterator, a consistent view, per store)."""
    encoded = prefix.encode()
    start = None if after is None else after.encode()
    for key, raw in heapq.merge(*(iter_entities(db, encoded, start) for db in dbs)):
        state = decode_state(raw)
        if exists(state):
            yield stored_entity(key.decode(), state)


def read_stats(raw: bytes | None) -> PartitionStats | None:
    """The :class:`PartitionStats` stored under :data:`STATS_KEY` (None when there are none)."""
    return None if raw is None else PartitionStats(*orjson.loads(raw))


def stored_offset(db: Any) -> int:
    """The events-topic offset the states of a partition store reach (-1: none recorded).

    That is the ``applied`` of its totals, which travel through the changelog with the states
    (the totals are the last record of each batch's changelog write). Not the local
    :data:`HISTORY_OFFSET_KEY`: after a crash, recovery can bring back from the changelog older
    states than the local store's last batch wrote (that batch's changelog write was cut short),
    while the local key, which no changelog restores, still says the newer offset; reading on from
    there would skip the records those states lack. A store written before the totals carried
    the offset falls back on the local key.
    """
    stats = read_stats(db.get(STATS_KEY))
    if stats is not None and stats.applied >= 0:
        return stats.applied
    local = db.get(HISTORY_OFFSET_KEY)
    return -1 if local is None else int(local)


def stored_entity(entity_id: str, state: State) -> StoredEntity:
    """The :class:`StoredEntity` of an existing entity's stored state."""
    entity = to_entity(entity_id, state)
    assert entity is not None
    return StoredEntity(entity, state["l"][0], state.get("o", -1))


class EntityStore:
    """Reads and batched writes of the entity table; implements :class:`flux.model.state.StateReader`."""

    def __init__(
        self, app: Any, table: Any, partitions: int, broker_check: Any = None, read_committed: Any = None
    ) -> None:
        self._app = app
        self._read_committed = read_committed  # async (partitions) -> {partition: the group's committed offset}
        self._committed: dict[int, int] = {}
        self._held: dict[int, int] = {}  # partition -> the offset its stored states reach, read once per assignment
        self._table = table
        self._partitions = partitions
        self._changelog = table.changelog_topic.get_topic_name()
        self._broker_check = broker_check
        self._stats: dict[int, PartitionStats] = {}
        self._seeded: dict[int, dict[bytes, int]] = {}  # counts found by a scan, stored with the next write
        self._applied: dict[int, int] = {}
        self._persisted: dict[int, int] = {}
        self._changelog_error: RuntimeError | None = None
        self._unacked: set[asyncio.Future[Any]] = set()  # changelog sends not acknowledged yet
        if hasattr(app, "commit_guard"):  # agents.app.FluxApp: its consumer asks before every offset commit
            app.commit_guard = self.changelog_written
        self.rebalances = 0  # bumped by every rebalance: a replay that spans one starts again
        self._watches: list[dict[int, set[bytes]]] = []
        self.stalled_partitions: list[int] = []  # set by agents.stall_watch: served but not advancing
        self.standbys: dict[int, int] = {}  # set by agents.table.standby: copied partition -> records behind
        self.board: AppliedBoard | None = None  # set when HTTP processes read the table: see agents.table.replica
        self.catch_up = CatchUp()  # fed by agents.applied_lag: ready only once caught up with the log

    # -- partitions -------------------------------------------------------------------------
    def active_partitions(self) -> list[int]:
        """Partitions whose table this node serves (active, not standby), recovery included."""
        actives = self._app.assignor.assigned_actives()
        return sorted(tp.partition for tp in actives if tp.topic == self._changelog)

    def owners(self) -> dict[str, list[int]]:
        """The nodes in the group's current assignment, by URL, with the partitions each serves."""
        return {
            str(url).rstrip("/"): sorted(topics.get(self._changelog, ()))
            for url, topics in self._app.assignor.table_metadata(self._changelog).items()
        }

    def owner_url(self, partition: int) -> str | None:
        """The URL of the node serving ``partition`` in the group's current assignment (None: nobody)."""
        return next((url for url, partitions in self.owners().items() if partition in partitions), None)

    def recovered(self) -> bool:
        """Whether Faust finished replaying the changelog into the local stores, and the worker folds on."""
        # tables.actives_ready is reset on every rebalance (recovery.completed is never cleared).
        return bool(self._app.tables.actives_ready and not self._app.rebalancing) and self.stopped() is None

    def stopped(self) -> str | None:
        """Why the worker no longer folds (it crashed, or it is stopping), or None while it does."""
        if self._app.crash_reason is not None:
            return f"the worker crashed ({self._app.crash_reason!r}) and is stopping"
        if self._app.should_stop:
            return "the worker is stopping"
        return None

    def partition_path(self, partition: int) -> str:
        """Where ``partition``'s RocksDB store lives (an HTTP process opens it as a secondary)."""
        return str(self._table.data.partition_path(partition))

    def db(self, partition: int) -> rocksdict.Rdict:
        """The RocksDB store of ``partition`` on this node, served or not (for the agents' own writes)."""
        db: rocksdict.Rdict = self._table.data._db_for_partition(partition)
        return db

    def serving_db(self, partition: int) -> rocksdict.Rdict:
        """The store of ``partition``; raises :class:`PartitionUnavailable` unless this node serves it now."""
        if not self.recovered() or partition not in self.active_partitions():
            raise PartitionUnavailable(partition)
        return self.db(partition)

    # -- writes (called by the reducer agent) ---------------------------------------------
    def load(self, partition: int, key: bytes) -> bytes | None:
        """The stored state bytes of ``key`` on ``partition`` (for the reducer)."""
        return self.db(partition).get(key)

    def applied_offset(self, partition: int) -> int:
        """The events-topic offset up to which this node wrote ``partition``'s state (-1: none yet)."""
        return self._applied.get(partition, -1)

    def shown_offset(self, partition: int) -> int:
        """Reads of the reducer's own store show everything applied: the applied offset."""
        return self.applied_offset(partition)

    async def settle(self, partition: int) -> None:
        """Nothing to wait for: the reducer's own store is always current."""

    async def positions(self, partitions: list[int]) -> dict[int, int]:
        """The first events-topic offset each partition's table does not hold.

        That is the furthest of: the offset the reducer applied up to since the partition was
        assigned; the offset the stored states already reach (:meth:`held`: after a crash or a
        takeover the table holds state of events past the group's committed offset, which the
        reducer reads again and skips); and, for a partition the reducer has not folded since it
        was assigned, the group's committed offset (0 if none). The last two are read once per
        assignment: the group's commits only move after the reducer folded something.
        """
        unknown = [p for p in partitions if self.applied_offset(p) < 0 and p not in self._committed]
        if unknown:
            found = await self._read_committed(unknown)
            self._committed.update({p: found.get(p, 0) for p in unknown})
        return {
            p: max(self.held(p), self._committed[p] if self.applied_offset(p) < 0 else self.applied_offset(p))
            for p in partitions
        }

    def held(self, partition: int) -> int:
        """The events-topic offset ``partition``'s stored states reach, as found when it was assigned
        (-1: unknown). A replay's new generation must fold at least this far, or its switch would
        take back what the table holds (:mod:`agents.replay.jobs`)."""
        held = self._held.get(partition)
        if held is None:
            held = stored_offset(self.db(partition))
            if self.recovered():  # until then the changelog may still be restoring the stats
                self._held[partition] = held
        return held

    def partition_events(self, partition: int) -> int:
        """How many events the table of ``partition`` has folded."""
        return self._partition_stats(partition).events

    def _partition_stats(self, partition: int) -> PartitionStats:
        stats = self._stats.get(partition)
        if stats is None:
            stats = read_stats(self.db(partition).get(STATS_KEY)) or PartitionStats(0, 0)
            if not stats.namespaces_counted:  # a store written before the counts were kept: count once
                stats = self._count_by_scan(partition, stats)
            self._stats[partition] = stats
        return stats

    def _count_by_scan(self, partition: int, stats: PartitionStats) -> PartitionStats:
        counts: dict[bytes, int] = {}
        entities = 0
        for key, value in self.iter_partition(self.db(partition), b""):
            if exists(decode_state(value)):
                entities += 1
                namespace = namespace_key(key)
                if namespace is not None:
                    counts[namespace] = counts.get(namespace, 0) + 1
        self._seeded[partition] = counts
        return PartitionStats(stats.events, entities, True, stats.applied)

    def _namespace_count(self, partition: int, namespace: bytes) -> int:
        seeded = self._seeded.get(partition)
        if seeded is not None:
            return seeded.get(namespace, 0)
        raw = self.db(partition).get(NAMESPACE_COUNT_PREFIX + namespace)
        return 0 if raw is None else int(raw)

    def _namespace_counts(self, partition: int, states: dict[bytes, tuple[bytes, int]]) -> list[tuple[bytes, bytes]]:
        """The count records of the namespaces whose entity count ``states`` change (all, after a scan)."""
        deltas: dict[bytes, int] = {}
        for key, (_, change) in states.items():
            namespace = namespace_key(key) if change else None
            if namespace is not None:
                deltas[namespace] = deltas.get(namespace, 0) + change
        seeded = self._seeded.pop(partition, None) or {}
        counts = {**seeded}
        for namespace, delta in deltas.items():
            base = seeded.get(namespace, 0) if seeded else self._namespace_count(partition, namespace)
            counts[namespace] = base + delta
        return [(NAMESPACE_COUNT_PREFIX + ns, str(count).encode()) for ns, count in counts.items()]

    def watch(self) -> dict[int, set[bytes]]:
        """From now on, collect the keys :meth:`write` writes, per partition, until :meth:`unwatch`."""
        watched: dict[int, set[bytes]] = {}
        self._watches.append(watched)
        return watched

    def unwatch(self, watched: dict[int, set[bytes]]) -> None:
        """Stop collecting into ``watched``."""
        self._watches.remove(watched)

    async def write(
        self,
        partition: int,
        states: dict[bytes, tuple[bytes, int]],
        applied: int,
        events: int,
        history: Sequence[tuple[bytes, bytes]] = (),
        seen: Mapping[bytes, int] | None = None,
        rewrite: bool = False,
    ) -> PartitionStats:
        """Persist changed states ``{key: (value, existence delta)}`` of one partition; returns its totals.

        ``history`` (key, event) entries and ``seen`` marks (see :mod:`flux.model.history`; each with the
        events-topic offset after its event) go into the same WriteBatch but not to the changelog:
        the events topic holds them already.

        ``applied`` is the events-topic offset the partition is folded up to, ``events`` how many
        events this batch folded; ``rewrite`` says the states changed without ``applied`` moving
        (a replay's switch), which readers in other processes must hear of. The states and the
        partition's totals go to the changelog as record batches (enqueued, not awaited) and into
        the partition's RocksDB in one WriteBatch.
        As with Faust's own table writes, durability comes from the worker flushing its producer
        before it commits the source offsets; since aiokafka's flush does not raise for a failed
        send, the worker's consumer also asks :meth:`changelog_written` before every commit, so a
        source event is never committed before the changelog record it caused is acknowledged.
        When the acks arrive, the persisted changelog offset is recorded; if a send fails for good,
        the worker stops rather than commit past state the changelog does not hold.
        """
        if self._changelog_error is not None:
            raise self._changelog_error
        for watched in self._watches:
            watched.setdefault(partition, set()).update(states)
        stats = self._partition_stats(partition)
        if not states and not events:
            self._applied[partition] = max(applied, self._applied.get(partition, -1))
            return stats
        entities = stats.entities + sum(change for _, change in states.values())
        stats = PartitionStats(stats.events + events, entities, True, max(applied, stats.applied))
        records = [(key, value) for key, (value, _) in states.items()]
        records.extend(self._namespace_counts(partition, states))
        records.append((STATS_KEY, orjson.dumps(list(stats))))
        futures = await self._send_changelog(partition, records)
        batch = rocksdict.WriteBatch(raw_mode=True)
        for key, value in records:
            batch.put(key, value)
        for key, value in history:
            batch.put(key, value)
        for key, offset in (seen or {}).items():
            batch.put(key, str(offset).encode())
        batch.put(HISTORY_OFFSET_KEY, str(applied).encode())
        self.db(partition).write(batch)
        if self.board is not None and rewrite:  # a replay's switch: the state changed, the offset did not
            self.board.bump(partition)
        self._stats[partition] = stats
        self._applied[partition] = max(applied, self._applied.get(partition, -1))
        for future in futures:
            self._unacked.add(future)
            future.add_done_callback(self._on_changelog_done)
        futures[-1].add_done_callback(lambda done: self._on_changelog_acked(partition, done))
        return stats

    async def changelog_written(self) -> bool:
        """Wait for every changelog send enqueued so far; whether all of them were acknowledged.

        The worker's consumer asks this before it commits source offsets (``agents.transport``), and
        commits nothing on ``False``: a failed send has already stopped the worker
        (:meth:`_on_changelog_failed`), and a cancelled one (the producer stopping) leaves its
        events to be folded again after the restart.
        """
        pending = list(self._unacked)
        if pending:
            await asyncio.wait(pending)
        for future in pending:  # looked at here too, whether or not their callbacks ran yet
            if future.cancelled():
                return False
            self._on_changelog_failed(future)
        return self._changelog_error is None

    def _on_changelog_done(self, done: asyncio.Future[Any]) -> None:
        self._unacked.discard(done)
        self._on_changelog_failed(done)

    def _on_changelog_failed(self, done: asyncio.Future[Any]) -> None:
        if done.cancelled() or done.exception() is None or self._changelog_error is not None:
            return
        self._changelog_error = RuntimeError(f"changelog write failed: {done.exception()!r}")
        log.critical("%s; stopping the worker", self._changelog_error)
        self._app.loop.create_task(self._app.crash(self._changelog_error))

    def _on_changelog_acked(self, partition: int, done: asyncio.Future[Any]) -> None:
        """Record the persisted changelog offset of ``partition`` once its last batch is acked.

        The base offset of the last batch is at most the true last offset, so recovery may
        re-read a few records (idempotent puts) but never skips one.
        """
        if done.cancelled() or done.exception() is not None:
            return  # see _on_changelog_done
        offset = int(done.result().offset)
        if offset > self._persisted.get(partition, -1) and partition in self._table.data._dbs:
            self._persisted[partition] = offset
            self.db(partition).put(OFFSET_KEY, str(offset).encode())

    async def _send_changelog(self, partition: int, records: list[tuple[bytes, bytes]]) -> list[Any]:
        """Enqueue ``(key, value)`` records as changelog batches; returns the batches' delivery futures."""
        producer = self._app.producer._ensure_producer()  # the Faust app's started aiokafka producer
        futures = []
        builder = producer.create_batch()
        for key, value in records:
            if builder.append(key=key, value=value, timestamp=None) is None:
                futures.append(await producer.send_batch(builder, self._changelog, partition=partition))
                builder = producer.create_batch()
                builder.append(key=key, value=value, timestamp=None)  # a first record always fits
        futures.append(await producer.send_batch(builder, self._changelog, partition=partition))
        return futures

    # -- reads (the StateReader interface) ----------------------------------------------
    def lookup(self, entity_id: str) -> StoredEntity | None:
        """The entity with its versions, or None; raises :class:`PartitionUnavailable` if not served here."""
        if "\0" in entity_id:  # internal keys; entity ids never contain NUL
            return None
        raw = self.serving_db(partition_for(entity_id, self._partitions)).get(entity_id.encode())
        if raw is None:
            return None
        state = decode_state(raw)
        return stored_entity(entity_id, state) if exists(state) else None

    def get(self, entity_id: str) -> dict[str, Any] | None:
        """The entity, or None; raises :class:`PartitionUnavailable` if its partition is not served here."""
        found = self.lookup(entity_id)
        return None if found is None else found.entity

    def iter_partition(
        self, db: rocksdict.Rdict, prefix: bytes, after: bytes | None = None
    ) -> Iterator[tuple[bytes, bytes]]:
        """(key, value) of the entities of one partition's store whose id starts with ``prefix``
        (and, given ``after``, sorts after it): :func:`iter_entities`."""
        return iter_entities(db, prefix, after)

    def serving_dbs(self, partitions: Sequence[int] | None) -> list[rocksdict.Rdict]:
        """The stores of ``partitions`` (default: every partition served here); raises
        :class:`PartitionUnavailable` for one this node does not serve now."""
        if partitions is None:
            if not self.recovered():
                raise PartitionUnavailable(-1)
            partitions = self.active_partitions()
        return [self.serving_db(p) for p in partitions]

    def iter_prefix(
        self, prefix: str, partitions: Sequence[int] | None = None, after: str | None = None
    ) -> Iterator[StoredEntity]:
        """Existing entities whose id starts with ``prefix`` (and sorts after ``after``), in id order,
        over ``partitions`` (default: every one served here).

        Each partition is read through one RocksDB iterator (a consistent view of that partition
        from the moment the iteration starts), so callers may pause between items.
        """
        return existing_entities(self.serving_dbs(partitions), prefix, after)

    def count_namespace(self, namespace: str, partitions: Sequence[int] | None = None) -> int:
        """Existing entities ``namespace/...`` over ``partitions`` (default: every one served here),
        from running counts."""
        if partitions is None:
            if not self.recovered():
                raise PartitionUnavailable(-1)
            partitions = self.active_partitions()
        for partition in partitions:
            self.serving_db(partition)
            self._partition_stats(partition)  # counts a store from before the counts once
        return sum(self._namespace_count(p, namespace.encode()) for p in partitions)

    def count(self) -> int:
        """Existing entities in the served partitions (from each partition's running totals)."""
        if not self.recovered():
            return sum(stats.entities for stats in self._stats.values())
        return sum(self._partition_stats(p).entities for p in self.active_partitions())

    def on_rebalance(self) -> None:
        """Forget what a rebalance may have made stale: cached totals, and the applied offsets of
        partitions this node no longer serves (another node may fold them meanwhile)."""
        self._stats.clear()
        self._seeded.clear()
        self._committed.clear()
        self._held.clear()
        served = set(self.active_partitions())
        self._applied = {p: offset for p, offset in self._applied.items() if p in served}
        self.catch_up.keep(served)
        self.rebalances += 1

    async def commit_source_offsets(self) -> None:
        """Have the worker commit the events-topic offsets of what the reducer applied so far."""
        await self._app.consumer.commit()

    async def readiness(self) -> Readiness:
        """Ready when the broker answers, recovery is done and every served partition caught up
        with the log end as of its assignment (:mod:`agents.table.catch_up`)."""
        broker = True
        if self._broker_check is not None:
            broker = await self._broker_check()
        recovered = self.recovered()
        partitions = self.active_partitions() if recovered else []
        detail = "" if recovered else self.stopped() or "table recovery or rebalance in progress"
        behind = await self._behind(partitions) if recovered and broker else {}
        if behind:
            detail = _catching_up(behind)
        stalled = self.stalled_partitions if recovered else []
        if stalled:
            detail = f"partitions {stalled} do not advance although the log has records for them; restart this node"
        if not broker:
            detail = "Kafka broker not reachable"
        return Readiness(
            broker and recovered and not stalled and not behind,
            broker,
            recovered,
            partitions,
            detail,
            dict(self.standbys),
            {p: n for p, n in behind.items() if n is not None},
        )

    async def _behind(self, partitions: list[int]) -> dict[int, int | None]:
        """The served partitions not caught up yet (see :meth:`readiness`), each with the records left."""
        try:
            positions = await self.positions(partitions)
        except Exception:  # the committed offsets could not be read: nothing is known yet
            return dict.fromkeys(partitions)
        return self.catch_up.behind(positions)


def _catching_up(behind: dict[int, int | None]) -> str:
    """The readiness detail of partitions still catching up (records left, None: the log end not read yet)."""
    known = {p: n for p, n in behind.items() if n is not None}
    unread = sorted(set(behind) - set(known))
    parts = [f"{sum(known.values())} records left to fold in partitions {sorted(known)}"] if known else []
    parts += [f"the log end of partitions {unread} not read yet"] if unread else []
    return "catching up with the log: " + "; ".join(parts)
