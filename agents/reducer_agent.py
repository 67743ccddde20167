"""The agent that folds the events topic into the entity table.

It takes records in batches (:func:`agents.batches.take_batches`: cut when no record came for a
millisecond, or after ``FLUX_FLUSH_INTERVAL_MS``; Faust acks them only after the loop body
returns), decodes each record (one event or a packed array), merges every event into the in-memory
state of its entity with :func:`flux.model.entity_limits.apply_within` (the merge of
:func:`flux.model.reducer.apply_event` under the entity caps), then writes each touched entity once
per batch through :class:`agents.table.store.EntityStore`. Invalid elements, and events that would
take their entity past a cap, go to the dead-letter topic with the reason; events on the wrong
partition are forwarded to theirs. With ``FLUX_OTEL_ENABLED`` a batch is folded inside a
``flux.fold`` span per partition, linked to the publishes whose records it folds (:mod:`flux.tracing`).
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Sequence
from typing import Any

import orjson

from agents.batches import take_batches
from agents.change_feed import ChangeFeed
from agents.membership_fence import Fenced, MembershipFence
from agents.table.store import EntityStore, decode_state
from flux.config import Settings
from flux.metrics import Metrics
from flux.model.changes import ChangeRecord, EntityChange, encode_ops
from flux.model.entity_limits import EMPTY_SIZE, EntityTooLarge, apply_within
from flux.model.events import encode
from flux.model.history import index_entry
from flux.model.records import DecodedRecord, Rejected, dead_letter, decode_record
from flux.model.reducer import Change, State, exists, new_state, to_entity
from flux.tracing import Tracing, tracing_for

log = logging.getLogger(__name__)

RECORDS_PER_BATCH = 5000
YIELD_EVERY_EVENTS = 250


class _Touched:
    """An entity's state while a batch is applied: current, as stored, whether it existed, what changed,
    and an upper bound of its encoded size (see :func:`flux.model.entity_limits.apply_within`)."""

    __slots__ = ("changes", "existed", "size", "state", "stored", "updated")

    def __init__(self, stored: bytes | None) -> None:
        self.stored = stored
        self.state: State = new_state() if stored is None else decode_state(stored)
        self.existed = exists(self.state)
        self.updated = self.last_updated()
        self.changes: list[Change] = []
        self.size = EMPTY_SIZE if stored is None else len(stored)

    @property
    def stamp(self) -> int:
        """The events-topic offset the stored state reached (``o``; -1 for none): every event of its
        partition below it is already folded into the state, applied or refused by the entity caps.

        A record read again after a crash (its offset not committed yet) is therefore skipped, not
        folded into a newer state than the one it met the first time: the caps' decision about it
        stays the one the log's order gives (see :mod:`flux.model.entity_limits`)."""
        return int(self.state.get("o", -1))

    def last_updated(self) -> int | None:
        """The entity's ``lastUpdated`` (ms) as the state says now; None while it does not exist."""
        return self.state["l"][0] if exists(self.state) else None

    def visibly_changed(self) -> bool:
        """Whether the entity's API view differs from the stored one: a property changed, or only its
        ``lastUpdated`` moved (an event repeating current values), which readers must see too."""
        return bool(self.changes) or self.last_updated() != self.updated

    def encode(self, applied: int) -> bytes:
        """The new stored value, stamped with ``applied`` even when the batch changed no property:
        the stamp says which events the state includes (see :meth:`BatchReducer.apply`)."""
        state = self.state
        previous = state.get("o")
        value = orjson.dumps(state)
        state["o"] = applied
        tail = f',"o":{previous}}}'.encode()
        if previous is None or not value.endswith(tail):
            return orjson.dumps(state)
        return value[: -len(tail)] + f',"o":{applied}}}'.encode()  # "o" is the last key: skip a re-encode


class _PartitionBatch:
    """What one batch did to one partition: entities touched, offset reached, events, sources,
    the history entries of the events it applied (see :mod:`flux.model.history`), and the oldest
    and newest record timestamps (ms) among its records, for ``flux_applied_latency_ms`` and the change
    record's ``t`` (``flux_relay_latency_ms``)."""

    __slots__ = ("applied", "entities", "events", "history", "newest", "oldest", "seen", "sources")

    def __init__(self) -> None:
        self.entities: dict[bytes, _Touched] = {}
        self.applied = -1
        self.events = 0
        self.sources: set[str] = set()
        self.history: list[tuple[bytes, bytes]] = []
        self.seen: dict[bytes, int] = {}  # applied-once mark -> events-topic offset after its event
        self.oldest: float = math.inf  # no record with a timestamp yet
        self.newest = 0


class ReducerStopped(RuntimeError):
    """A batch failed earlier in this process: no later batch is applied (the worker is going down)."""


class WritesPaused:
    """The reducer's writes held back on purpose (a replay's switch): an ``async with`` takes the
    reducer's write lock. :meth:`locked` says whether someone holds it *this way*, not whether a
    batch is being written: a watch that waits out a switch must still see a batch that hangs."""

    def __init__(self, lock: asyncio.Lock) -> None:
        self._lock = lock
        self._held = False

    async def __aenter__(self) -> None:
        await self._lock.acquire()
        self._held = True

    async def __aexit__(self, *_: object) -> None:
        self._held = False
        self._lock.release()

    def locked(self) -> bool:
        """Whether writes are paused on purpose now."""
        return self._held


class BatchReducer:
    """Applies batches of events-topic records to the entity table.

    A batch that fails is neither written whole nor acknowledged, and the reducer refuses every
    later batch (:class:`ReducerStopped`): Faust restarts a crashed agent at once, and a batch
    applied after an unwritten one would let the offset commit pass records nobody folded.
    """

    def __init__(
        self,
        app: Any,
        store: EntityStore,
        feed: ChangeFeed,
        settings: Settings,
        metrics: Metrics,
        fence: MembershipFence,
        tracing: Tracing | None = None,
    ) -> None:
        self._app = app
        self._tracing = tracing if tracing is not None else tracing_for(settings)
        self._fence = fence
        self._feed = feed
        self._store = store
        self._settings = settings
        self._limits = settings.event_limits()
        self._entity_limits = settings.entity_limits()
        self._metrics = metrics
        self._writing = asyncio.Lock()
        self._pause = WritesPaused(self._writing)
        self._failure: Exception | None = None

    def paused(self) -> WritesPaused:
        """Hold this (``async with``) to keep the reducer from applying batches meanwhile."""
        return self._pause

    async def apply(self, records: Sequence[Any]) -> int:
        """Fold ``records`` (Faust events) into the table; returns how many events were applied."""
        async with self._writing:
            if self._failure is not None:
                raise ReducerStopped(f"an earlier batch failed: {self._failure!r}") from self._failure
            try:
                if self._tracing is None:
                    return await self._apply(records)
                with self._tracing.folding(records):
                    return await self._apply(records)
            except Exception as exc:
                self._failure = exc
                raise

    async def _apply(self, records: Sequence[Any]) -> int:
        batches: dict[int, _PartitionBatch] = {}
        forwards: list[tuple[int, bytes | None, bytes]] = []
        dead: list[bytes] = []
        applied = 0
        duplicates = 0
        refused = 0
        next_yield = YIELD_EVERY_EVENTS
        for record in records:
            message = record.message
            timestamp_ms = round((message.timestamp or 0) * 1000)  # Faust gives seconds; Kafka has ms
            decoded: DecodedRecord = decode_record(
                message.value,
                topic=message.topic,
                partition=message.partition,
                offset=message.offset,
                timestamp_ms=timestamp_ms,
                partitions=self._settings.partitions,
                limits=self._limits,
            )
            partition = message.partition
            batch = batches.get(partition)
            if batch is None:
                batch = batches[partition] = _PartitionBatch()
            batch.applied = max(batch.applied, message.offset + 1)
            if 0 < timestamp_ms < batch.oldest:
                batch.oldest = timestamp_ms
            if timestamp_ms > batch.newest:
                batch.newest = timestamp_ms
            entities = batch.entities
            for envelope in decoded.events:
                mark, history_key, stored = index_entry(envelope)
                key = envelope["payload"]["entity_id"].encode()
                entity = entities.get(key)
                if entity is None:
                    entity = _Touched(self._store.load(partition, key))
                if (
                    message.offset < entity.stamp
                    or mark in batch.seen
                    or self._already_applied(partition, mark, entity)
                ):
                    duplicates += 1  # a record read again, or a re-sent event: applied and stored once
                    continue
                try:
                    changes, entity.size = apply_within(entity.state, envelope, self._entity_limits, entity.size)
                except EntityTooLarge as exc:  # not applied, not marked: the same eventId may come back later
                    refused += 1
                    reject = Rejected(None, str(exc), envelope)
                    dead.append(dead_letter(reject, topic=message.topic, partition=partition, offset=message.offset))
                    continue
                entities[key] = entity
                batch.seen[mark] = message.offset + 1
                batch.history.append((history_key, stored))
                batch.events += 1
                entity.changes += changes
                batch.sources.add(envelope["source"])
            applied += len(decoded.events)
            if applied >= next_yield:  # let HTTP requests in between slices of a large batch
                next_yield = applied + YIELD_EVERY_EVENTS
                await asyncio.sleep(0)
            for home, envelope in decoded.misplaced:
                forwards.append((home, envelope["payload"]["entity_id"].encode(), encode(envelope)))
            for rejected in decoded.rejected:
                dead.append(dead_letter(rejected, topic=message.topic, partition=partition, offset=message.offset))

        try:
            await self._fence.check()  # a node frozen past its session may have lost its partitions
        except Fenced:
            self._metrics.fenced_batches += 1
            raise  # the worker stops without acknowledging the batch (see agents.membership_fence)
        for partition, batch in batches.items():
            await self._write(partition, batch)
        await self._send_all(self._settings.events_topic, forwards)
        await self._send_all(self._settings.dead_letter_topic, [(0, None, value) for value in dead])
        if dead:
            log.warning(
                "sent %d invalid events to %s (%d over an entity cap)",
                len(dead),
                self._settings.dead_letter_topic,
                refused,
            )
        self._metrics.applied(applied - duplicates - refused)
        self._metrics.duplicates(duplicates)
        self._metrics.rejected(len(dead))
        return applied - duplicates - refused

    def _already_applied(self, partition: int, mark: bytes, entity: _Touched) -> bool:
        """Whether the entity's state includes the event ``mark`` stands for.

        A mark holds the events-topic offset just after its event; the state's stamp ``o`` the
        offset its last batch reached (every batch that applies an event to an entity stamps it).
        After a crash, recovery from the changelog can bring back an older state than the marks
        (which are not changelogged): then the stamp is below the mark, the mark is stale, and the
        event is applied again when its record is read again, as it must be.
        """
        marked = self._store.load(partition, mark)
        return marked is not None and int(entity.state.get("o", -1)) >= int(marked)

    async def _write(self, partition: int, batch: _PartitionBatch) -> None:
        """Store what the batch changed in ``partition``, then announce it on the change feed."""
        changed: dict[bytes, tuple[bytes, int]] = {}
        feed: list[EntityChange] = []
        for key, entity in batch.entities.items():
            value = entity.encode(batch.applied)
            changed[key] = (value, int(exists(entity.state)) - int(entity.existed))
            if entity.visibly_changed():  # on the feed even without ops: HTTP processes' overlays need the view
                entity_id = key.decode()
                feed.append(
                    EntityChange(
                        entity_id, batch.applied, encode_ops(entity.changes), to_entity(entity_id, entity.state)
                    )
                )
        stats = await self._store.write(partition, changed, batch.applied, batch.events, batch.history, batch.seen)
        if batch.events and batch.oldest != math.inf:  # one observation per batch and partition, per event
            self._metrics.applied_since(batch.oldest, batch.events)
        record = ChangeRecord(
            partition, batch.applied, stats.events, stats.entities, sorted(batch.sources), feed, batch.newest
        )
        await self._feed.publish(record)

    async def _send_all(self, topic: str, records: list[tuple[int, bytes | None, bytes]]) -> None:
        if not records:
            return
        producer = self._app.producer
        futures = [await producer.send(topic, key, value, partition, None, None) for partition, key, value in records]
        for future in futures:
            await future


def install_reducer(app: Any, events_topic: Any, reducer: BatchReducer, flush_interval_s: float) -> Any:
    """Register the reducer agent on ``app``; returns the agent."""

    async def reduce_events(stream: Any) -> None:
        async for records in take_batches(stream, RECORDS_PER_BATCH, within=flush_interval_s):
            try:
                await reducer.apply(records)
            except ReducerStopped:
                raise  # the worker is already on its way down (see below)
            except Exception as exc:
                # Never ack a batch that was not fully written: stop the worker, so that a restart
                # resumes from the last committed offset instead of skipping these records.
                log.critical("reducer failed, stopping the worker: %r", exc)
                await app.crash(exc)
                raise

    return app.agent(events_topic, name="flux.reducer")(reduce_events)
