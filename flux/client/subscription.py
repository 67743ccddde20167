"""Live changes over ``WS /api/ws`` (docs/websocket.md) as an async iterator that survives lost connections.

A :class:`Subscription` connects, subscribes to its patterns and yields typed change messages
(:data:`~flux.client.models.Change`). When the connection drops (the node restarts, the network
fails, the server drops a slow client) it connects again with backoff, subscribes again, and first
yields :class:`~flux.client.models.Reconnected`, then a snapshot of every matching entity marked
``resync=True`` with a :class:`~flux.client.models.SnapshotComplete` per pattern, then live changes
again: the snapshot holds every change made while it was away, so none is missed silently (an
entity absent from the resync snapshot was deleted meanwhile).

``error`` messages: a subscription the server could not serve for the moment (partitions moving,
"try again shortly") is sent again after a pause; any other (a pattern outside the token's
namespace, a snapshot over the limit) raises :class:`~flux.client.errors.SubscriptionError`. A
socket closed for its token raises :class:`~flux.client.errors.Unauthorized`. Both end the
subscription. Liveness is watched by WebSocket pings (``ping_s``); ``pong`` and acknowledgements
are not yielded, ``metrics_update`` only with ``metrics=True``.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import httpx
import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from flux.client.errors import BY_STATUS, FluxError, SubscriptionError, Unauthorized, Unavailable
from flux.client.exchange import auth_headers
from flux.client.models import (
    Change,
    Entity,
    EntityDeleted,
    EntityUpdate,
    MetricsUpdate,
    PropertyRemoved,
    Reconnected,
    Snapshot,
    SnapshotComplete,
    StateUpdate,
)
from flux.client.retry import FOREVER, Attempts, RetryPolicy

FORMATS = ("property", "entity")
CLOSE_POLICY = 1008  # the server's close for a bad token, and for a client too slow to read
TOO_SLOW = "too slow"  # ... told apart by the reason
TRANSIENT = "try again"  # an error message the server expects to clear by itself
UNRECOVERABLE_STATUSES = (401, 403, 404)

Decoder = Callable[[Mapping[str, Any], bool], Change]
DECODERS: dict[str, Decoder] = {
    "state_update": lambda m, _: StateUpdate(
        str(m["entity_id"]), str(m["property"]), m.get("value"), str(m["timestamp"])
    ),
    "update": lambda m, _: EntityUpdate(Entity.from_json(m["entity"])),
    "entity_deleted": lambda m, _: EntityDeleted(str(m["entity_id"]), str(m["timestamp"])),
    "property_removed": lambda m, _: PropertyRemoved(str(m["entity_id"]), str(m["property"])),
    "snapshot": lambda m, resync: Snapshot(Entity.from_json(m["entity"]), resync),
    "snapshot_complete": lambda m, resync: SnapshotComplete(str(m["entity_id"]), int(m["count"]), resync),
}


def websocket_url(base_url: str) -> str:
    """``ws(s)://host/.../api/ws`` of a Flux base URL ``http(s)://host/...``."""
    url = httpx.URL(base_url)
    scheme = {"http": "ws", "https": "wss"}.get(url.scheme, url.scheme)
    return str(url.copy_with(scheme=scheme, path=url.path.rstrip("/") + "/api/ws", query=None))


class Subscription:
    """An async iterator of the changes of entities matching ``patterns`` (see the module docstring).

    Use it as ``async with client.subscribe([...]) as changes: async for change in changes: ...``;
    entering waits until every pattern is subscribed (so changes made afterwards are seen), leaving
    closes the socket. ``snapshot`` asks for the matching entities first; ``resync`` for a snapshot
    after each reconnect (without it, changes made while away are lost); ``reconnect`` bounds the
    tries per outage (default: forever, backing off up to 5 s).
    """

    def __init__(
        self,
        base_url: str,
        patterns: str | Iterable[str],
        *,
        token: str | None = None,
        snapshot: bool = True,
        format: str = "property",
        resync: bool = True,
        metrics: bool = False,
        reconnect: RetryPolicy = FOREVER,
        open_timeout_s: float = 10.0,
        ping_s: float = 20.0,
    ) -> None:
        self.url = websocket_url(base_url)
        self.patterns = list(dict.fromkeys([patterns] if isinstance(patterns, str) else patterns))
        if not self.patterns or not all(isinstance(p, str) and p for p in self.patterns):
            raise ValueError("patterns: give at least one non-empty pattern (an id, 'prefix*' or '*')")
        if format not in FORMATS:
            raise ValueError(f"format must be one of {FORMATS}")
        self._headers = auth_headers(token)
        self._snapshot = snapshot
        self._format = format
        self._resync = resync
        self._metrics = metrics
        self._reconnect = reconnect
        self._open_timeout = open_timeout_s
        self._ping = ping_s
        self._ws: ClientConnection | None = None
        self._queue: deque[Change] = deque()
        self._attempts = Attempts(reconnect)
        self._retries: dict[str, Attempts] = {}  # patterns the server could not serve for the moment
        self._awaiting: set[str] = set()  # patterns sent, not yet acknowledged
        self._established = False  # a connection was made before: the next one is a reconnect
        self._resyncing = False  # the current connection's snapshots are a resync
        self._lost_because = ""
        self.closed = False
        self.reconnects = 0

    # -- the iterator ----------------------------------------------------------------------------
    async def __aenter__(self) -> Subscription:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Change:
        while not self._queue:
            if self.closed:
                raise StopAsyncIteration
            await self._step()
        return self._queue.popleft()

    async def start(self) -> None:
        """Connect and wait until every pattern is subscribed (messages that arrive meanwhile are kept)."""
        while not self.closed and (self._ws is None or self._awaiting):
            await self._step()

    async def close(self) -> None:
        """Close the socket; the iterator ends."""
        self.closed = True
        self._queue.clear()
        ws, self._ws = self._ws, None
        if ws is not None:
            await ws.close()

    # -- one step: connect, or read one message ------------------------------------------------
    async def _step(self) -> None:
        try:
            if self._ws is None:
                await self._open()
            else:
                await self._handle(await self._ws.recv())
        except ConnectionClosed as exc:
            self._lost(exc)
        except FluxError:
            await self.close()
            raise

    async def _open(self) -> None:
        try:
            ws = await connect(
                self.url,
                additional_headers=self._headers,
                max_size=None,
                open_timeout=self._open_timeout,
                ping_interval=self._ping,
                ping_timeout=self._ping,
            )
        except InvalidStatus as exc:
            status = exc.response.status_code
            if status in UNRECOVERABLE_STATUSES:
                raise BY_STATUS[status](f"WebSocket upgrade refused: {exc}", status) from exc
            await self._pause(f"HTTP {status} on the upgrade")
            return
        except (OSError, TimeoutError, InvalidHandshake) as exc:
            await self._pause(f"{type(exc).__name__}: {exc}")
            return
        if self.closed:
            await ws.close()
            return
        self._ws = ws
        self._resyncing = self._established
        if self._established:
            self.reconnects += 1
            self._queue.append(Reconnected(self._lost_because, self._attempts.failures + 1))
        self._established = True
        self._awaiting = set(self.patterns)
        for pattern in self.patterns:
            await self._subscribe(pattern)

    async def _pause(self, failure: str) -> None:
        delay = self._attempts.pause()
        if delay is None:
            raise Unavailable(f"cannot reach {self.url} ({self._attempts.failures} tries): {failure}")
        self._lost_because = self._lost_because or failure
        await asyncio.sleep(delay)

    def _lost(self, exc: ConnectionClosed) -> None:
        self._ws = None
        if self.closed:
            return
        close = exc.rcvd
        if close is not None and close.code == CLOSE_POLICY and not close.reason.startswith(TOO_SLOW):
            self.closed = True
            raise Unauthorized(close.reason or "the server closed the WebSocket (policy violation)") from exc
        self._lost_because = f"connection closed ({close.code} {close.reason})".strip() if close else str(exc)

    def _asks_snapshot(self) -> bool:
        return self._resync if self._resyncing else self._snapshot

    async def _subscribe(self, pattern: str) -> None:
        assert self._ws is not None
        self._awaiting.add(pattern)
        message = {"type": "subscribe", "entity_id": pattern, "format": self._format, "snapshot": self._asks_snapshot()}
        await self._ws.send(orjson.dumps(message).decode())

    # -- messages --------------------------------------------------------------------------------
    async def _handle(self, raw: str | bytes) -> None:
        try:
            message = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return  # not Flux's: nothing to yield
        if not isinstance(message, dict):
            return
        kind = message.get("type")
        decode = DECODERS.get(str(kind))
        if decode is not None:
            self._queue.append(decode(message, self._resyncing))
        elif kind == "metrics_update" and self._metrics:
            self._queue.append(MetricsUpdate(message))
        elif kind == "error":
            await self._error(message)
        if kind == "subscribed":
            self._awaiting.discard(str(message.get("entity_id")))
        if kind == "snapshot_complete" or (kind == "subscribed" and not message.get("snapshot")):
            self._retries.pop(str(message.get("entity_id")), None)
        if not self._awaiting and kind in ("subscribed", "snapshot_complete"):
            self._attempts.reset()  # back: the next outage counts its tries afresh
            self._lost_because = ""

    async def _error(self, message: Mapping[str, Any]) -> None:
        pattern = message.get("entity_id")
        text = str(message.get("error", "error"))
        if isinstance(pattern, str) and pattern in self.patterns and TRANSIENT in text:
            delay = self._retries.setdefault(pattern, Attempts(self._reconnect)).pause()
            if delay is not None:
                await asyncio.sleep(delay)
                if self._ws is not None:
                    await self._subscribe(pattern)
                return
        raise SubscriptionError(text, pattern if isinstance(pattern, str) else None)
