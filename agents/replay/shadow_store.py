"""A new generation of one partition's entity table, folded from the events topic by a replay.

It lives in its own RocksDB directory, apart from the table Faust serves, and holds what the live
table holds for the same events: entity states (without the ``o`` stamp, which the switch adds),
applied-once marks (the first occurrence of an eventId wins, as in the live reducer) and the
count of events folded. It folds under the same entity caps as the live reducer
(:mod:`flux.model.entity_limits`): an event the reducer refused is refused here too. It is not
changelogged: the switch (:mod:`agents.replay.jobs`) writes what differs from the live table
through the live table's own changelog.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
import rocksdict

from agents.log_reader import decode_message
from flux.config import Settings
from flux.model.entity_limits import EMPTY_SIZE, EntityTooLarge, apply_within
from flux.model.history import seen_key
from flux.model.reducer import State, new_state

EVENTS_KEY = b"__flux\0replay-events__"


def open_shadow(path: Path) -> rocksdict.Rdict:
    """The RocksDB store of one partition's new generation at ``path`` (created if missing)."""
    options = rocksdict.Options(raw_mode=True)
    options.create_if_missing(True)
    return rocksdict.Rdict(str(path), options=options)


def shadow_events(db: rocksdict.Rdict) -> int:
    """How many events the generation in ``db`` folded."""
    raw = db.get(EVENTS_KEY)
    return 0 if raw is None else int(raw)


class ShadowPartition:
    """Folds records of one events-topic partition into a new generation, one WriteBatch per call."""

    def __init__(self, db: rocksdict.Rdict, settings: Settings) -> None:
        self.db = db
        self.events = shadow_events(db)
        self.touched: set[bytes] = set()  # the entity keys the last fold wrote
        self._partitions = settings.partitions
        self._limits = settings.event_limits()
        self._entity_limits = settings.entity_limits()

    def fold(self, messages: Sequence[Any]) -> int:
        """Apply the events of ``messages`` (aiokafka records, in offset order); returns how many applied.

        Invalid events, events over an entity cap and events on the wrong partition are skipped: the
        live reducer sent them to the dead-letter topic, or forwarded them to their partition, where
        they are folded.
        """
        db = self.db
        states: dict[bytes, State] = {}
        sizes: dict[bytes, int] = {}  # upper bounds of the states' encoded sizes
        written: set[bytes] = set()  # the keys an event was applied to (not only refused ones)
        marks: set[bytes] = set()
        applied = 0
        for message in messages:
            decoded = decode_message(message, self._partitions, self._limits)
            for envelope in decoded.events:
                entity_id = envelope["payload"]["entity_id"]
                mark = seen_key(entity_id, envelope["eventId"])
                if mark in marks or db.get(mark) is not None:
                    continue
                key = entity_id.encode()
                state = states.get(key)
                if state is None:
                    stored = db.get(key)
                    state = states[key] = new_state() if stored is None else orjson.loads(stored)
                    sizes[key] = EMPTY_SIZE if stored is None else len(stored)
                try:
                    _, sizes[key] = apply_within(state, envelope, self._entity_limits, sizes[key])
                except EntityTooLarge:
                    continue  # not applied, not marked, as in the live reducer
                marks.add(mark)
                written.add(key)
                applied += 1
        self.events += applied
        self.touched = written
        batch = rocksdict.WriteBatch(raw_mode=True)
        for key in written:
            batch.put(key, orjson.dumps(states[key]))
        for mark in marks:
            batch.put(mark, b"")
        batch.put(EVENTS_KEY, str(self.events).encode())
        db.write(batch)
        return applied
