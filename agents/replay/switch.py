"""Switching the live entity table to a replay's new generation, with live writes paused briefly.

1. While live writes go on, every key of the live table is compared with the new generation (one
   RocksDB iterator each, a consistent view); the keys that differ are the candidates, and from
   the moment the comparison starts, the keys the reducer writes are watched.
2. With the reducer paused, the records the live table folded after the new generation's position
   (what arrived during a short last round of catching up, see :mod:`agents.replay.jobs`) are folded here, so
   that both hold exactly the same offsets. Only the candidates, the watched keys and the keys
   those last records touched can differ now: each is compared again, and what differs is
   written through the live table's changelog in one RocksDB write per partition, stamped with
   the switch's offset, and announced on the change feed. An entity the new generation lacks
   keeps an empty state with the stamp, so that its eventIds stay applied once.

Pausing costs the tail and the differing entities, not the size of the table.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from agents.change_feed import ChangeFeed
from agents.log_reader import log_consumer
from agents.replay.shadow_store import ShadowPartition, open_shadow
from agents.table.store import EntityStore, decode_state
from flux.config import Settings
from flux.model.changes import ChangeRecord, EntityChange, encode_ops
from flux.model.reducer import State, diff_states, exists, new_state, to_entity
from flux.model.replay import SwitchReport

YIELD_EVERY_KEYS = 2_000


def unstamped(raw: bytes) -> bytes:
    """A stored state without its trailing ``"o"`` stamp (the key the reducer always writes last)."""
    cut = raw.rfind(b',"o":')
    if cut > 0 and raw.endswith(b"}") and raw[cut + 5 : -1].lstrip(b"-").isdigit():
        return raw[:cut] + b"}"
    return raw


def stamped(state: State, offset: int) -> bytes:
    """The stored form of ``state`` as written by a batch that reached ``offset``."""
    state.pop("o", None)
    state["o"] = offset
    return orjson.dumps(state)


def joined(
    live: Iterator[tuple[bytes, bytes]], shadow: Iterator[tuple[bytes, bytes]]
) -> Iterator[tuple[bytes, bytes | None, bytes | None]]:
    """(key, live value, new value) over the union of two key-ordered streams."""
    a, b = next(live, None), next(shadow, None)
    while a is not None or b is not None:
        if b is None or (a is not None and a[0] < b[0]):
            assert a is not None
            yield a[0], a[1], None
            a = next(live, None)
        elif a is None or b[0] < a[0]:
            yield b[0], None, b[1]
            b = next(shadow, None)
        else:
            yield a[0], a[1], b[1]
            a, b = next(live, None), next(shadow, None)


def _same(old_raw: bytes | None, new_raw: bytes | None) -> bool:
    return old_raw is not None and new_raw is not None and unstamped(old_raw) == new_raw


class GenerationSwitch:
    """The new generation of some partitions, compared with and then written over the live table."""

    def __init__(self, settings: Settings, store: EntityStore, feed: ChangeFeed, directory: Path) -> None:
        self._settings = settings
        self._store = store
        self._feed = feed
        self._directory = directory
        self._shadows: dict[int, ShadowPartition] = {}
        self._candidates: dict[int, set[bytes]] = {}
        self._touched: dict[int, set[bytes]] = {}
        self._watched = store.watch()
        self._tail: AIOKafkaConsumer | None = None

    async def compare(self, partitions: list[int]) -> int:
        """Find the keys whose state differs (live writes go on); returns how many."""
        for partition in partitions:
            shadow = self._shadows[partition] = ShadowPartition(
                open_shadow(self._directory / f"p{partition}"), self._settings
            )
            found = self._candidates[partition] = set()
            pairs = joined(
                self._store.iter_partition(self._store.db(partition), b""),
                self._store.iter_partition(shadow.db, b""),
            )
            for index, (key, old_raw, new_raw) in enumerate(pairs):
                if index % YIELD_EVERY_KEYS == YIELD_EVERY_KEYS - 1:
                    await asyncio.sleep(0)
                if not _same(old_raw, new_raw):
                    found.add(key)
        return sum(len(keys) for keys in self._candidates.values())

    async def open_tail(self, positions: dict[int, int]) -> None:
        """Connect a reader of the events topic at the new generation's ``positions``."""
        self._tail = log_consumer(self._settings, "replay-tail")
        await self._tail.start()
        topics = {p: TopicPartition(self._settings.events_topic, p) for p in positions}
        self._tail.assign(list(topics.values()))
        for p, offset in positions.items():
            self._tail.seek(topics[p], offset)

    async def fold_tail(self, ends: dict[int, int]) -> int:
        """Fold the records up to ``ends`` into the new generation (after :meth:`open_tail`); returns events."""
        assert self._tail is not None
        tail = self._tail
        topics = {p: TopicPartition(self._settings.events_topic, p) for p in ends}
        pending = {p for p in ends if await tail.position(topics[p]) < ends[p]}
        events = 0
        while pending:
            fetched = await tail.getmany(*(topics[p] for p in pending), timeout_ms=100)
            for p in list(pending):
                messages = fetched.get(topics[p], [])
                within = [m for m in messages if m.offset < ends[p]]
                if within:
                    shadow = self._shadows[p]
                    events += shadow.fold(within)
                    self._touched.setdefault(p, set()).update(shadow.touched)
                if len(within) < len(messages) or await tail.position(topics[p]) >= ends[p]:
                    pending.discard(p)
        return events

    async def apply(self, positions: dict[int, int], rebalances: int) -> SwitchReport:
        """Write what differs, partition by partition (reducer paused); ``positions`` are the offsets
        both generations now hold the events up to."""
        report = SwitchReport()
        for partition, offset in positions.items():
            if self._store.rebalances != rebalances or partition not in self._store.active_partitions():
                raise RuntimeError(f"partition {partition} moved during the switch; run the replay again")
            await self._apply_partition(partition, offset, report)
        await self._store.commit_source_offsets()  # a restart must not fold again what the switch replaced
        return report

    async def _apply_partition(self, partition: int, offset: int, report: SwitchReport) -> None:
        store = self._store
        live = store.db(partition)
        shadow = self._shadows[partition]
        keys = self._candidates[partition] | self._watched.get(partition, set()) | self._touched.get(partition, set())
        changed: dict[bytes, tuple[bytes, int]] = {}
        feed: list[EntityChange] = []
        now_ms = int(time.time() * 1000)
        for key in sorted(keys):
            old_raw, new_raw = live.get(key), shadow.db.get(key)
            if _same(old_raw, new_raw):
                continue
            old = None if old_raw is None else decode_state(old_raw)
            new = None if new_raw is None else decode_state(new_raw)
            if old is not None:
                old.pop("o", None)
            if old == new or (new is None and old == new_state()):
                continue
            entity_id = key.decode()
            report.changed += 1
            report.removed += int(exists(old) and not exists(new))
            changed[key] = (stamped(new or new_state(), offset), int(exists(new)) - int(exists(old)))
            ops = encode_ops(diff_states(old, new, now_ms))
            if ops:
                feed.append(EntityChange(entity_id, offset, ops, to_entity(entity_id, new)))
        events = shadow.events - store.partition_events(partition)
        stats = await store.write(partition, changed, offset, events, rewrite=True)
        report.entities += stats.entities
        if changed or events:
            await self._feed.publish(ChangeRecord(partition, offset, stats.events, stats.entities, [], feed))

    async def close(self) -> None:
        """Stop watching, close the new generation's stores and the tail reader."""
        self._store.unwatch(self._watched)
        for shadow in self._shadows.values():
            shadow.db.close()
        if self._tail is not None:
            await self._tail.stop()
