"""``WS /api/ws``: live subscriptions to entity changes, relayed from the change feed.

A client subscribes to patterns (an exact id, ``prefix*`` such as ``acme/*``, or ``*``) and gets,
per pattern, either per-property messages (``state_update``, the default for ``entity_id``) or
whole-entity messages (``update``, the default for the ``entityId`` spelling), plus
``entity_deleted`` and a ``metrics_update`` every few seconds. With ``"snapshot": true`` the
current state of every matching entity comes first (``snapshot`` messages, then
``snapshot_complete``); the offsets in the change feed join the two without a gap or a duplicate.

Connections, their queues and the fan-out live in :mod:`api.live.hub`.

With ``FLUX_AUTH_ENABLED=true`` and ``FLUX_PUBLIC_READS=false`` a client shows a token
(``Authorization: Bearer`` on the upgrade request, or ``?token=`` for browsers, which cannot set
headers): without a valid one the socket is closed at once with 1008 and the reason; a pattern
outside the token's namespace gets an ``error`` message and the connection stays open. When the
token's namespace is deleted or gets a new token (on any node), the connection is closed with 1008
and a reason saying which (:meth:`api.live.hub.Hub.namespace_changed`).

Browser pages of other origins than Flux's own and those of ``FLUX_WS_ALLOWED_ORIGINS`` are
refused before the handshake is accepted (403; :mod:`api.live.origin`).

Limits per connection: a client message of more than FLUX_WS_MAX_MESSAGE_BYTES closes the
connection (1009, :data:`CLOSE_TOO_BIG`); a pattern longer than FLUX_MAX_ENTITY_ID_LENGTH (its
trailing ``*`` aside), a subscribe beyond FLUX_WS_SUBSCRIBE_PER_SECOND (a token bucket holding one
second's worth) or beyond FLUX_WS_MAX_SUBSCRIPTIONS patterns gets an ``error`` message. Every
answer is queued like any other message, within the queue's bounds (:mod:`api.live.hub`), so a
client that keeps sending without reading is dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any

import orjson
from fastapi import APIRouter, WebSocket
from starlette.websockets import WebSocketDisconnect

from api.deps import node_of
from api.errors import ApiError, error_response
from api.live.hub import (
    CLOSE_UNAUTHORIZED,
    CLOSE_WAIT_S,
    FORMAT_ENTITY,
    FORMAT_PROPERTY,
    Connection,
    Hub,
    message_text,
)
from api.live.origin import refusal as origin_refusal
from api.live.subscriptions import Pattern
from flux.model.state import PartitionUnavailable

router = APIRouter()

CLOSE_TOO_BIG = 1009  # a client message larger than FLUX_WS_MAX_MESSAGE_BYTES


class TokenBucket:
    """``rate`` actions a second, and as many (at least one) at once after a quiet second."""

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.capacity = max(1.0, rate)
        self.tokens = self.capacity
        self._clock = clock
        self._stamp = clock()

    def take(self) -> bool:
        """Spend one token; False (nothing spent) when none is left."""
        now = self._clock()
        self.tokens = min(self.capacity, self.tokens + (now - self._stamp) * self.rate)
        self._stamp = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


class ClientError(ValueError):
    """A client message that cannot be acted on; answered with an ``error`` message."""


def parse_client_message(raw: str | bytes, max_pattern_length: int = 512) -> dict[str, Any]:
    """A client message as ``{"type", "pattern", "form", "snapshot"}``; raises :class:`ClientError`.

    A pattern's id or prefix (the pattern without its trailing ``*``) is at most ``max_pattern_length``
    characters, the longest entity id."""
    try:
        message = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ClientError(f"message is not valid JSON: {exc}") from exc
    if not isinstance(message, dict):
        raise ClientError("message must be a JSON object")
    kind = message.get("type")
    if kind == "ping":
        return {"type": "ping"}
    if kind not in ("subscribe", "unsubscribe"):
        raise ClientError(f"unknown message type {kind!r}; expected 'subscribe', 'unsubscribe' or 'ping'")
    spelled = "entity_id" if "entity_id" in message else "entityId"
    pattern = message.get(spelled)
    if not isinstance(pattern, str) or not pattern:
        raise ClientError(f"{kind} needs 'entity_id' (or 'entityId'): an id, a 'prefix*' pattern or '*'")
    if len(pattern.removesuffix("*")) > max_pattern_length:
        raise ClientError(
            f"{spelled} is longer than {max_pattern_length} characters (FLUX_MAX_ENTITY_ID_LENGTH), "
            "so it matches no entity"
        )
    form = message.get("format", FORMAT_PROPERTY if spelled == "entity_id" else FORMAT_ENTITY)
    if form not in (FORMAT_PROPERTY, FORMAT_ENTITY):
        raise ClientError("format must be 'property' or 'entity'")
    snapshot = message.get("snapshot", False)
    if not isinstance(snapshot, bool):
        raise ClientError("snapshot must be true or false")
    return {"type": kind, "pattern": pattern, "form": form, "snapshot": snapshot}


async def _handle(hub: Hub, connection: Connection, raw: str | bytes, subscribes: TokenBucket) -> None:
    try:
        message = parse_client_message(raw, hub.settings.max_entity_id_length)
    except ClientError as exc:
        connection.reply(message_text({"type": "error", "error": str(exc)}))
        return
    if message["type"] == "ping":
        connection.reply(message_text({"type": "pong"}))
        return
    text = message["pattern"]
    if message["type"] == "unsubscribe":
        if hub.unsubscribe(connection, text):
            connection.reply(message_text({"type": "unsubscribed", "entity_id": text}))
        else:
            connection.reply(message_text({"type": "error", "error": f"not subscribed to {text!r}", "entity_id": text}))
        return
    if not subscribes.take():
        rate = hub.settings.ws_subscribe_per_second
        connection.reply(
            message_text(
                {
                    "type": "error",
                    "entity_id": text,
                    "error": f"more than {rate:g} subscribes a second (FLUX_WS_SUBSCRIBE_PER_SECOND); "
                    "wait and subscribe again",
                }
            )
        )
        return
    pattern = Pattern.parse(text)
    try:
        guard = node_of(connection.websocket).guard
        guard.check_prefix(connection.caller, text if pattern.prefix is None else pattern.prefix, "read")
    except ApiError as exc:
        connection.reply(message_text({"type": "error", "entity_id": text, "error": exc.message}))
        return
    limit = hub.settings.ws_max_subscriptions
    if text not in connection.subscriptions and len(connection.subscriptions) >= limit:
        connection.reply(message_text({"type": "error", "error": f"at most {limit} subscriptions per connection"}))
        return
    snapshot = message["snapshot"]
    try:
        if snapshot and not await hub.snapshot_size_ok(pattern, connection.auth):
            connection.reply(
                message_text(
                    {
                        "type": "error",
                        "entity_id": text,
                        "error": f"a snapshot of {text!r} would hold more than {hub.settings.ws_snapshot_limit} "
                        "entities (FLUX_WS_SNAPSHOT_LIMIT); subscribe without a snapshot and page through "
                        "GET /api/state/entities instead",
                    }
                )
            )
            return
        subscription = hub.subscribe(connection, pattern, message["form"], snapshot)
        connection.reply(
            message_text({"type": "subscribed", "entity_id": text, "format": message["form"], "snapshot": snapshot})
        )
        if snapshot:
            count = await hub.send_snapshot(subscription)
            connection.reply(message_text({"type": "snapshot_complete", "entity_id": text, "count": count}))
    except PartitionUnavailable as exc:
        hub.unsubscribe(connection, text)
        connection.reply(message_text({"type": "error", "entity_id": text, "error": f"{exc}; try again shortly"}))


async def refuse_handshake(websocket: WebSocket, message: str) -> None:
    """Refuse a handshake before accepting it: 403 with Flux's JSON error where the server can answer
    the upgrade request so, else a close with 1008 and the reason (an HTTP 403 without a body)."""
    if "websocket.http.response" in websocket.scope.get("extensions", {}):
        await websocket.send_denial_response(error_response(403, message))
    else:
        await websocket.close(CLOSE_UNAUTHORIZED, message[:120])


@router.websocket("/api/ws")
async def websocket_endpoint(websocket: WebSocket) -> None:
    """Live entity changes; see the module docstring for the protocol."""
    node = node_of(websocket)
    hub: Hub = node.hub
    refused = origin_refusal(websocket, hub.allowed_origins)
    if refused is not None:
        await refuse_handshake(websocket, refused)
        return
    await websocket.accept()
    try:
        caller = node.guard.reader(websocket)
    except ApiError as exc:
        await websocket.close(CLOSE_UNAUTHORIZED, exc.message[:120])
        return
    settings = hub.settings
    connection = Connection(websocket, settings.ws_queue_limit, caller, settings.ws_queue_max_bytes)
    subscribes = TokenBucket(settings.ws_subscribe_per_second)
    hub.join(connection)
    sender = asyncio.create_task(connection.send_loop())
    try:
        while True:
            receive = asyncio.ensure_future(websocket.receive())
            waiting: set[asyncio.Future[Any]] = {receive, sender, connection.dropped}
            await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            if not receive.done():
                receive.cancel()
                break
            message = receive.result()
            if message["type"] == "websocket.disconnect":
                break
            text = message.get("text")
            raw: str | bytes = text if text is not None else message.get("bytes") or b""
            size = len(raw) if isinstance(raw, bytes) else len(raw.encode())
            if size > settings.ws_max_message_bytes:
                connection.drop(
                    f"message of {size} bytes is larger than FLUX_WS_MAX_MESSAGE_BYTES "
                    f"({settings.ws_max_message_bytes})",
                    CLOSE_TOO_BIG,
                )
                break
            await _handle(hub, connection, raw, subscribes)
    except WebSocketDisconnect:
        pass
    finally:
        hub.leave(connection)
        sender.cancel()
        with contextlib.suppress(BaseException):
            await sender
    if connection.dropped.done():
        if connection.too_slow:
            hub.metrics.websocket_dropped += 1
        with contextlib.suppress(Exception):
            await asyncio.wait_for(websocket.close(connection.close_code, connection.dropped.result()), CLOSE_WAIT_S)
