"""During the run: a reader that notes entities going away or back in time, and WebSocket subscribers.

The reader polls random entities (``GET /api/state/entities/{id}``) and whole writers' sets
(``GET /api/state/entities?prefix=``) on random nodes. It remembers the greatest ``seq`` and
``lastUpdated`` it saw of each entity: a later answer without the entity (``404``, or absent from
a list) is a **disappearance**, one with a smaller ``seq`` or an earlier ``lastUpdated`` a
**rollback**. Refused reads (``503`` while partitions move, a node down) are counted, not noted.

A subscriber per node follows ``<run>/*`` over the WebSocket with the client's reconnecting
subscription: it counts ``state_update``s and, per entity, notes ``seq`` going down (a regression)
or jumping (a gap: updates lost in a crash are documented, docs/websocket.md).
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field

from bench.soak.ledger import Ledger
from flux.client import AsyncFluxClient, FluxError, Reconnected, Snapshot, StateUpdate
from flux.client.models import Entity


@dataclass
class Seen:
    seq: int
    last_updated: str
    at: float  # when it was seen (seconds since the start)
    where: str


@dataclass
class Reader:
    clients: list[AsyncFluxClient]
    ledger: Ledger
    prefixes: list[str]
    rng: random.Random
    interval_s: float = 0.05
    reads: int = 0
    lists: int = 0
    refused: int = 0
    seen: dict[str, Seen] = field(default_factory=dict)
    _rechecks: set[asyncio.Task[None]] = field(default_factory=set)

    def _observe(self, entity_id: str, entity: Entity | None, where: str) -> None:
        before = self.seen.get(entity_id)
        if entity is None:
            if before is not None:
                self.ledger.note("disappeared", entity_id, f"{where}: gone after {self._describe(before)}")
                self._recheck(entity_id)
            return
        seq = int(entity.properties.get("seq", 0))
        if before is not None and (seq < before.seq or entity.last_updated < before.last_updated):
            self.ledger.note(
                "rolled back",
                entity_id,
                f"{where}: seq {seq} (event time {entity.last_updated}) after {self._describe(before)}",
            )
            self._recheck(entity_id)
        if before is None or seq >= before.seq:
            self.seen[entity_id] = Seen(seq, entity.last_updated, round(self.ledger.elapsed(), 1), where)

    @staticmethod
    def _describe(seen: Seen) -> str:
        minutes, seconds = divmod(seen.at, 60)
        when = f"{int(minutes):02d}:{seconds:04.1f}"
        return f"seq {seen.seq} (event time {seen.last_updated}) seen at {when} by {seen.where}"

    def _recheck(self, entity_id: str) -> None:
        """Read the entity on every node now and 5 s later, and note what each answered (transient or not)."""
        if len(self._rechecks) < 20:
            task = asyncio.create_task(self._read_everywhere(entity_id))
            self._rechecks.add(task)

    async def _read_everywhere(self, entity_id: str) -> None:
        for delay in (0.0, 5.0):
            await asyncio.sleep(delay)
            answers = []
            for index, client in enumerate(self.clients):
                try:
                    entity = await client.get(entity_id)
                    answers.append(f"node-{index + 1}: {'404' if entity is None else entity.properties.get('seq')}")
                except FluxError as exc:
                    answers.append(f"node-{index + 1}: {exc.status or 'no answer'}")
            self.ledger.note("recheck", entity_id, f"+{delay:.0f} s seq " + ", ".join(answers))

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            index = self.rng.randrange(len(self.clients))
            client = self.clients[index]
            where = f"node-{index + 1}"
            try:
                if self.rng.random() < 0.05:
                    await self._list(client, self.rng.choice(self.prefixes), where)
                else:
                    known = list(self.ledger.last_acked_seq)
                    if known:
                        entity_id = self.rng.choice(known)
                        self._observe(entity_id, await client.get(entity_id), f"{where} get")
                        self.reads += 1
            except FluxError:
                self.refused += 1
            await asyncio.sleep(self.interval_s)
        await asyncio.gather(*self._rechecks, return_exceptions=True)

    async def _list(self, client: AsyncFluxClient, prefix: str, where: str) -> None:
        found: dict[str, Entity] = {}
        async for entity in client.list(prefix, page_size=500):
            found[entity.id] = entity
        self.lists += 1
        for entity_id in [e for e in self.seen if e.startswith(prefix)]:
            self._observe(entity_id, found.get(entity_id), f"{where} list")
        for entity_id, entity in found.items():
            if entity_id not in self.seen:
                self._observe(entity_id, entity, f"{where} list")


@dataclass
class Subscriber:
    client: AsyncFluxClient
    name: str
    pattern: str
    ledger: Ledger
    updates: int = 0
    snapshots: int = 0
    reconnects: int = 0
    gaps: int = 0
    regressions: int = 0
    last: dict[str, int] = field(default_factory=dict)
    subscribed: asyncio.Event = field(default_factory=asyncio.Event)

    def _seq(self, entity_id: str, seq: int, how: str) -> None:
        before = self.last.get(entity_id)
        if before is not None and seq < before:
            self.regressions += 1
            self.ledger.note("ws regression", entity_id, f"{self.name} {how}: seq {seq} after {before}")
        elif before is not None and seq > before + 1 and how == "update":
            self.gaps += 1
        if before is None or seq > before:
            self.last[entity_id] = seq

    async def run(self, stop: asyncio.Event) -> None:
        async with self.client.subscribe([self.pattern], snapshot=True) as changes:
            self.subscribed.set()
            async for change in changes:
                if stop.is_set():
                    return
                match change:
                    case Reconnected():
                        self.reconnects += 1
                    case Snapshot(entity=entity):
                        self.snapshots += 1
                        self._seq(entity.id, int(entity.properties.get("seq", 0)), "snapshot")
                    case StateUpdate(entity_id=entity_id, property="seq", value=value):
                        self.updates += 1
                        self._seq(entity_id, int(value), "update")
                    case StateUpdate():
                        self.updates += 1
