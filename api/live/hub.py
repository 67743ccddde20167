"""The WebSocket hub: connections, their subscriptions, and the fan-out of relayed changes to them.

Every connection has a queue of outgoing messages and its own sender task, so a slow client never
slows the relay, ingestion or other clients. The queue is bounded by count (FLUX_WS_QUEUE_LIMIT
messages) and by bytes (FLUX_WS_QUEUE_MAX_BYTES, every message counted: changes, snapshots and
replies). A client over either bound when the next change record or metrics update arrives, or
when it is answered, is dropped: closed with code 1008 and a reason saying so
(:data:`CLOSE_TOO_SLOW`), and its queued messages are released at once. A snapshot never pushes a
queue past the byte bound: it waits for the client to read, and a client that does not read within
:data:`SNAPSHOT_WAIT_S` is dropped. A queue thus never holds more than the bounds plus one record's
messages. The protocol spoken over a connection is in :mod:`api.live.websocket`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
from fastapi import WebSocket

from api.auth import OPEN, Caller, Guard, bearer_token
from api.cluster.gather import Cluster
from api.live.subscriptions import Pattern, SubscriptionIndex
from flux.background import cancel
from flux.config import Settings
from flux.metrics import Metrics
from flux.model.changes import OP_DELETED, OP_REMOVED, ChangeRecord, EntityChange
from flux.model.partitioning import partition_for
from flux.model.reducer import rfc3339_ms
from flux.model.state import StateReader, StoredEntity

log = logging.getLogger(__name__)

CLOSE_TOO_SLOW = 1008
CLOSE_UNAUTHORIZED = 1008  # policy violation: the reason says which
CLOSE_DROPPED = 1008  # too slow, or the token voided: the reason says which
FORMAT_PROPERTY = "property"
FORMAT_ENTITY = "entity"
SNAPSHOT_SLICE = 200
CLOSE_WAIT_S = 10.0  # a dropped client gets this long to read what is buffered, then its close frame
SNAPSHOT_WAIT_S = 10.0  # a snapshot waits this long for a full queue to make room, then drops the client


def message_size(text: str) -> int:
    """The memory a queued message takes, in bytes (what FLUX_WS_QUEUE_MAX_BYTES counts)."""
    return sys.getsizeof(text)


def message_text(message: dict[str, Any]) -> str:
    return orjson.dumps(message).decode()


def change_messages(change: EntityChange, form: str) -> list[str]:
    """The messages a subscriber in ``form`` gets for one entity's change, in order."""
    messages: list[str] = []
    updated = False
    for op in change.ops:
        if op[0] == OP_DELETED:
            messages.append(
                message_text({"type": "entity_deleted", "entity_id": change.id, "timestamp": rfc3339_ms(op[1])})
            )
        elif form == FORMAT_PROPERTY and op[0] == OP_REMOVED:
            messages.append(message_text({"type": "property_removed", "entity_id": change.id, "property": op[1]}))
        elif form == FORMAT_PROPERTY:
            _, name, value, timestamp = op
            messages.append(
                message_text(
                    {
                        "type": "state_update",
                        "entity_id": change.id,
                        "property": name,
                        "value": value,
                        "timestamp": rfc3339_ms(timestamp),
                    }
                )
            )
        else:
            updated = True
    if updated and change.entity is not None:
        messages.append(message_text({"type": "update", "entity": change.entity}))
    return messages


class Subscription:
    """One pattern of one connection, in one format; during a snapshot its live messages wait."""

    __slots__ = ("connection", "floor", "form", "pattern", "pending", "pending_bytes", "seen", "until")

    def __init__(self, connection: Connection, pattern: Pattern, form: str) -> None:
        self.connection = connection
        self.pattern = pattern
        self.form = form
        self.pending: list[tuple[EntityChange, list[str]]] | None = None
        self.pending_bytes = 0  # what ``pending`` holds, counted against the connection's byte bound
        self.seen: dict[str, int] = {}  # entity id -> feed offset its snapshot included
        self.until: dict[int, int] = {}  # partition -> offset after which ``seen`` is not needed
        self.floor: dict[int, int] = {}  # partition -> offset the node had shown when this subscribed

    def already_sent(self, change: EntityChange, partition: int) -> bool:
        """Whether ``change`` is part of what this subscription's snapshot showed, or was shown by the
        node (another process's relay or read) before it subscribed: old news either way."""
        if self.floor and self.floor.get(partition, -1) >= change.o:
            return True
        return bool(self.seen) and self.seen.get(change.id, -1) >= change.o

    def caught_up(self, partition: int, applied: int) -> bool:
        """Forget the snapshot offsets and the floor once the feed passed them; True when nothing is
        left to forget."""
        if self.until and self.until.get(partition, applied + 1) <= applied:
            del self.until[partition]
            if not self.until:
                self.seen.clear()
        if self.floor and self.floor.get(partition, applied + 1) <= applied:
            del self.floor[partition]
        return not self.until and not self.floor


class Connection:
    """One WebSocket client: its subscriptions and its outgoing queue, bounded by count and by bytes."""

    def __init__(
        self, websocket: WebSocket, queue_limit: int, caller: Caller = OPEN, max_bytes: int = 4_194_304
    ) -> None:
        self.websocket = websocket
        self.caller = caller
        self.token = bearer_token(websocket) if caller is not OPEN else None  # re-checked when namespaces change
        self.auth = None if self.token is None else f"Bearer {self.token}"  # for other nodes' share of a snapshot
        self.queue_limit = queue_limit
        self.max_bytes = max_bytes
        self.queue: asyncio.Queue[str] = asyncio.Queue()
        self.queued_bytes = 0  # :func:`message_size` of what ``queue`` holds
        self.subscriptions: dict[str, Subscription] = {}
        self.dropped: asyncio.Future[str] = asyncio.get_running_loop().create_future()  # the close reason
        self.close_code = CLOSE_DROPPED
        self.too_slow = False
        self._taken = asyncio.Event()  # set whenever the sender takes a message off the queue

    def send(self, text: str) -> None:
        """Queue ``text`` (nothing once the connection is dropped)."""
        if not self.dropped.done():
            self.queue.put_nowait(text)
            self.queued_bytes += message_size(text)

    def reply(self, text: str) -> None:
        """Queue an answer to the client's own message, dropping the client if that puts it over a bound."""
        self.send(text)
        self.check_backlog()

    def over_bound(self, extra: int = 0) -> bool:
        """Whether the queue (plus ``extra`` bytes) holds more than either bound."""
        return self.queue.qsize() > self.queue_limit or self.queued_bytes + extra > self.max_bytes

    def check_backlog(self) -> None:
        """Drop the client if more than ``queue_limit`` messages or ``max_bytes`` bytes still wait for it."""
        if self.over_bound():
            self.drop_too_slow()

    async def room_for(self, size: int, wait_s: float) -> bool:
        """Wait until ``size`` more bytes fit within the byte bound (or the queue is empty, so that a message
        larger than the bound still goes alone); False, the client dropped as too slow, if it did not read
        enough within ``wait_s`` seconds, and False if it was dropped meanwhile."""
        deadline = asyncio.get_running_loop().time() + wait_s
        while not self.dropped.done() and self.queued_bytes and self.queued_bytes + size > self.max_bytes:
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                self.drop_too_slow(f"read nothing of a full queue ({self.max_bytes} bytes) for {wait_s:g} s")
                break
            self._taken.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._taken.wait(), remaining)
        return not self.dropped.done()

    def drop_too_slow(self, why: str | None = None) -> None:
        """Give up on this client: it is closed with :data:`CLOSE_TOO_SLOW` and a reason saying ``why``
        (by default, which bound its queue is over)."""
        if not self.dropped.done():
            self.too_slow = True
            if why is None:
                waiting = (
                    f"{self.queue_limit} messages"
                    if self.queue.qsize() > self.queue_limit
                    else f"{self.max_bytes} bytes of messages"
                )
                why = f"more than {waiting} waiting"
            self.drop(f"too slow: {why}; reconnect and subscribe again")

    def drop(self, reason: str, code: int = CLOSE_DROPPED) -> None:
        """Close this connection (``code``, ``reason``) and send it nothing more: its queued messages, and
        those a snapshot held back, are released at once."""
        if not self.dropped.done():
            self.close_code = code
            self.dropped.set_result(reason[:120])
            self.release()

    def release(self) -> None:
        """Forget every message waiting for this client."""
        while not self.queue.empty():
            self.queue.get_nowait()
        self.queued_bytes = 0
        for subscription in self.subscriptions.values():
            if subscription.pending:
                subscription.pending = []
            subscription.pending_bytes = 0
        self._taken.set()

    async def send_loop(self) -> None:
        """Write queued messages to the socket, in order, as fast as the client reads them."""
        while True:
            text = await self.queue.get()
            self.queued_bytes = max(0, self.queued_bytes - message_size(text))
            self._taken.set()
            await self.websocket.send_text(text)


class Hub:
    """Every connection of this process, their subscriptions, and routing of feed records to them."""

    def __init__(self, settings: Settings, reader: StateReader, metrics: Metrics, cluster: Cluster) -> None:
        self.settings = settings
        self.reader = reader
        self.cluster = cluster
        self.metrics = metrics
        self.allowed_origins = settings.ws_origins()  # besides Flux's own (api.live.origin)
        self.connections: set[Connection] = set()
        self._index: SubscriptionIndex[Subscription] = SubscriptionIndex()
        self._catching_up: set[Subscription] = set()
        self._relayed: dict[int, int] = {}  # partition -> the newest applied offset this relay delivered

    # -- membership ----------------------------------------------------------------------
    def join(self, connection: Connection) -> None:
        """Register a new connection."""
        self.connections.add(connection)
        self.metrics.websocket_connections = len(self.connections)

    def leave(self, connection: Connection) -> None:
        """Forget a connection and all its subscriptions."""
        for subscription in connection.subscriptions.values():
            self._index.remove(subscription.pattern, subscription)
            self._catching_up.discard(subscription)
        connection.subscriptions.clear()
        self.connections.discard(connection)
        self.metrics.websocket_connections = len(self.connections)

    def subscribe(self, connection: Connection, pattern: Pattern, form: str, snapshot: bool) -> Subscription:
        """Add (or replace) ``connection``'s subscription to ``pattern``."""
        self.unsubscribe(connection, pattern.text)
        subscription = Subscription(connection, pattern, form)
        if snapshot:
            subscription.pending = []  # the snapshot's offsets then tell old news from new
        else:
            subscription.floor = self._floor(pattern)
            if subscription.floor:
                self._catching_up.add(subscription)
        connection.subscriptions[pattern.text] = subscription
        self._index.add(pattern, subscription)
        return subscription

    def _floor(self, pattern: Pattern) -> dict[int, int]:
        """Per partition ``pattern`` may match, how far the node had shown it (a ``?wait=true`` answer
        or a read in another HTTP process) where this process's relay has not got there yet: the
        changes up to there happened before the subscription, and it must not get them as news."""
        count = self.settings.partitions
        partitions = range(count) if pattern.prefix is not None else [partition_for(pattern.text, count)]
        floor = {}
        for partition in partitions:
            shown = self.reader.shown_offset(partition)
            if shown > self._relayed.get(partition, -1):
                floor[partition] = shown
        return floor

    def unsubscribe(self, connection: Connection, text: str) -> bool:
        """Remove ``connection``'s subscription to the pattern ``text``; False if there was none."""
        subscription = connection.subscriptions.pop(text, None)
        if subscription is None:
            return False
        self._index.remove(subscription.pattern, subscription)
        self._catching_up.discard(subscription)
        return True

    def namespace_changed(self, name: str, guard: Guard) -> None:
        """Close (1008, with the reason) the connections of namespace ``name`` whose token a change of
        the namespace voided: rotated, or the namespace deleted (private reads; see api.app)."""
        for connection in list(self.connections):
            namespace = connection.caller.namespace
            if namespace is not None and namespace.name == name:
                reason = guard.revoked(connection.caller, connection.token)
                if reason is not None:
                    connection.drop(reason)

    # -- the feed ------------------------------------------------------------------------
    def on_record(self, record: ChangeRecord) -> None:
        """Route one change-feed record to the subscriptions its entities match.

        A connection still holding more than FLUX_WS_QUEUE_LIMIT messages from earlier records is
        dropped first; the burst of one record never counts against a client by itself.
        """
        for connection in self.connections:
            connection.check_backlog()
        if record.applied > self._relayed.get(record.partition, -1):
            self._relayed[record.partition] = record.applied
        if self._index:
            for change in record.changes:
                if change.ops:  # a change of lastUpdated alone is news to readers, not to subscribers
                    self._route(change, record.partition)
        for subscription in list(self._catching_up):
            if subscription.caught_up(record.partition, record.applied):
                self._catching_up.discard(subscription)

    def _route(self, change: EntityChange, partition: int) -> None:
        rendered: dict[str, list[str]] = {}
        delivered: set[tuple[Connection, str]] = set()
        for subscription in self._index.match(change.id):
            if subscription.already_sent(change, partition):
                continue
            form = subscription.form
            messages = rendered.get(form)
            if messages is None:
                messages = rendered[form] = change_messages(change, form)
            if subscription.pending is not None:
                connection = subscription.connection
                if connection.dropped.done():
                    continue
                subscription.pending.append((change, messages))
                subscription.pending_bytes += sum(message_size(text) for text in messages)
                if len(subscription.pending) > connection.queue_limit or connection.over_bound(
                    subscription.pending_bytes
                ):
                    connection.drop_too_slow()
                continue
            target = (subscription.connection, form)
            if target in delivered:
                continue
            delivered.add(target)
            for text in messages:
                subscription.connection.send(text)

    # -- snapshots -----------------------------------------------------------------------
    async def _matching(self, pattern: Pattern, auth: str | None, chunk: int) -> AsyncIterator[StoredEntity]:
        """The entities ``pattern`` matches now, over the whole cluster, in id order."""
        if pattern.prefix is None:
            for stored in (await self.cluster.lookup([pattern.text], auth)).values():
                yield stored
            return
        async for stored in self.cluster.entities(pattern.prefix, auth, chunk):
            yield stored

    async def snapshot_size_ok(self, pattern: Pattern, auth: str | None) -> bool:
        """Whether a snapshot of ``pattern`` stays within FLUX_WS_SNAPSHOT_LIMIT entities."""
        limit = self.settings.ws_snapshot_limit
        count = 0
        async for _ in self._matching(pattern, auth, limit + 1):
            count += 1
            if count > limit:
                return False
        return True

    async def send_snapshot(self, subscription: Subscription) -> int:
        """Send the current state of every matching entity, then the live changes that waited.

        Each snapshot message waits for room within FLUX_WS_QUEUE_MAX_BYTES (the client reading); a
        client that does not make room within :data:`SNAPSHOT_WAIT_S` is dropped as too slow, and the
        snapshot stops there, as it does when the connection is dropped for any other reason.
        """
        connection = subscription.connection
        count = 0
        async for stored in self._matching(subscription.pattern, connection.auth, SNAPSHOT_SLICE):
            text = message_text({"type": "snapshot", "entity": stored.entity})
            if not await connection.room_for(message_size(text), SNAPSHOT_WAIT_S):
                return count
            subscription.seen[stored.entity["id"]] = stored.applied
            connection.send(text)
            count += 1
            if count % SNAPSHOT_SLICE == 0:
                await asyncio.sleep(0)
        until = {p: offset for p in range(self.settings.partitions) if (offset := self.reader.applied_offset(p)) >= 0}
        for entity_id, applied in subscription.seen.items():  # partitions other nodes serve
            partition = partition_for(entity_id, self.settings.partitions)
            until[partition] = max(until.get(partition, -1), applied)
        subscription.until = {p: offset for p, offset in until.items() if offset >= 0}
        pending, subscription.pending = subscription.pending or [], None
        subscription.pending_bytes = 0
        delivered: set[int] = set()
        for change, messages in pending:
            partition = partition_for(change.id, self.settings.partitions)
            if subscription.already_sent(change, partition) or id(change) in delivered:
                continue
            delivered.add(id(change))
            for text in messages:
                connection.send(text)
        connection.check_backlog()
        if subscription.until:
            self._catching_up.add(subscription)
        else:
            subscription.seen.clear()
        return count

    # -- metrics -------------------------------------------------------------------------
    def broadcast(self, text: str) -> None:
        """Queue ``text`` for every connection (dropping those too far behind first)."""
        for connection in list(self.connections):
            connection.check_backlog()
            connection.send(text)


class MetricsTicker:
    """Sends ``metrics_update`` to every connection every FLUX_WS_METRICS_INTERVAL_S seconds."""

    def __init__(self, hub: Hub, totals: Any) -> None:
        self._hub = hub
        self._totals = totals
        self._task: asyncio.Task[None] | None = None

    def message(self) -> dict[str, Any]:
        """The current ``metrics_update`` message."""
        totals = self._totals
        entities = totals.entities() if totals.partitions_known() else 0
        if totals.partitions_known() < self._hub.settings.partitions:
            with contextlib.suppress(Exception):  # the feed has not reported every partition yet
                entities = max(entities, self._hub.reader.count())
        return {
            "type": "metrics_update",
            "timestamp": rfc3339_ms(int(time.time() * 1000)),
            "entities": {"total": entities},
            "events": {"total": totals.events(), "rate_per_second": round(totals.events_rate(), 1)},
            "websocket": {"connections": len(self._hub.connections)},
            "publishers": {"active": totals.active_publishers()},
        }

    async def start(self) -> None:
        """Start ticking."""
        self._task = asyncio.create_task(self._run(), name="flux-ws-metrics")

    async def stop(self) -> None:
        """Stop ticking."""
        await cancel(self._task)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._hub.settings.ws_metrics_interval_s)
            try:
                message = self.message()
            except Exception:
                log.exception("metrics_update failed")
                continue
            if self._hub.connections:
                self._hub.broadcast(message_text(message))
