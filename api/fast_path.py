"""A short way past FastAPI for the two requests a busy node serves most: one event published
(``POST /api/events``) and one entity read (``GET /api/state/entities/{id}``).

Why it exists: for these requests FastAPI's middleware, routing and dependency solving cost
several times the work itself (issue 17: about 55% of a single-event POST's time). The work is
already hand-written and cheap (:func:`flux.model.events.validate_event`, the
:class:`api.auth.Guard`, the publisher, the state reader), so :class:`FastPath`, a plain ASGI app
that :func:`api.app.create_app` puts in front of the FastAPI app (outermost: the server calls it
first), calls those same functions directly for the common, successful case. The requests it
serves skip FastAPI's native OpenTelemetry hooks, which Flux does not configure (the ``flux.publish``
span of ``FLUX_OTEL_ENABLED`` is the publisher's: a POST served here has it too).

What it takes, and only when it can answer exactly as the route would:

* ``POST /api/events`` without a query string (no ``wait``), without ``X-Idempotency-Key``, with a
  JSON ``Content-Type`` and a body within ``FLUX_MAX_EVENT_BYTES``, whose event is valid, and whose
  caller the guard lets write that entity and charges (the same checks in the route's order);
  the answer is the route's ``{"eventId", "stream"}`` with the same status and headers.
* ``GET /api/state/entities/{id}`` without a query string (no ``at``), when the guard lets the
  caller read the entity and this node serves its partition and has the entity (the reader
  raises :class:`flux.model.state.PartitionUnavailable` otherwise, exactly when the route's
  ``settle`` would wait for owners or forward); as the route does, it first lets an HTTP
  process's reader settle on the change feed (:meth:`flux.model.state.StateReader.settle`).

Everything else goes to FastAPI unchanged: other requests at once, and a request of the two kinds
that fails any check before the publish (bad JSON, an invalid event, a refused or rate-limited
token, a read to forward, a missing entity, any exception) with the body read so far replayed to
it. So every error answer is the existing code's, and the route finds the rate limit as it was
(the guard charges last and takes nothing when it refuses). Once the publisher is called there is
no going back (an event is never published twice): an exception from then on goes to the app's
own exception handler for it, as FastAPI's middleware would call it (:meth:`FastPath._failed`).

With request ids on (:class:`api.request_id.RequestIdMiddleware`), a request served here sets
:data:`flux.logs.REQUEST_ID` while it publishes and answers (so its log lines, uvicorn's access
line included, carry it) and answers ``X-Request-ID``, as that middleware does.
``create_app(..., fast_path=False)`` builds the app without it (the tests compare the two).
"""

from __future__ import annotations

import inspect
import time
from collections import deque
from collections.abc import Mapping
from typing import Any, cast

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import HTTPConnection, Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.body import is_json_type
from api.deps import Node
from api.live.read_your_writes import wait_timeout
from api.request_id import HEADER as REQUEST_ID_HEADER
from api.request_id import request_id_of
from flux.logs import REQUEST_ID
from flux.model.entity_limits import check_alone
from flux.model.events import entity_of, validate_event
from flux.model.partitioning import partition_for

EVENTS_PATH = "/api/events"
ENTITY_PREFIX = "/api/state/entities/"
JSON_TYPE = (b"content-type", b"application/json")  # what api.responses.JSON answers


def _replay(messages: list[Message], receive: Receive) -> Receive:
    """``receive`` that first gives ``messages`` again (the body the fast path read already)."""
    pending = deque(messages)

    async def replayed() -> Message:
        if pending:
            return pending.popleft()
        return await receive()

    return replayed


class FastPath:
    """Serves the common single-event POST and entity GET of ``node`` itself; hands every other
    request to ``app`` (FastAPI itself: :meth:`api.app.FluxApp.behind_fast_path`). See the module docstring."""

    def __init__(
        self,
        app: ASGIApp,
        node: Node,
        exception_handlers: Mapping[Any, Any],
        request_ids: bool,
        routes: Mapping[str, Any] | None = None,
    ) -> None:
        self.app = app
        self._node = node
        self._entity_limits = node.settings.entity_limits()
        self._routes = routes or {}  # "publish", "read": the routes whose answers these are (for request metrics)
        self._handlers = exception_handlers  # the FastAPI app's (a live view: handlers added later count)
        self._request_ids = request_ids

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve ``scope`` here if it is one of the two requests, else pass it on."""
        if scope["type"] == "http" and not scope.get("query_string") and not scope.get("root_path"):
            path = scope["path"]
            method = scope["method"]
            if method == "POST" and path == EVENTS_PATH:
                await self._publish(scope, receive, send)
                return
            if method == "GET" and path.startswith(ENTITY_PREFIX):
                entity_id = path[len(ENTITY_PREFIX) :]
                if entity_id and "\n" not in entity_id:  # what the route's {entity_id:path} matches
                    await self._read(scope, receive, send, entity_id)
                    return
        await self.app(scope, receive, send)

    # -- GET /api/state/entities/{id} -----------------------------------------------------
    async def _read(self, scope: Scope, receive: Receive, send: Send, entity_id: str) -> None:
        node = self._node
        try:
            caller = node.guard.reader(HTTPConnection(scope))
            node.guard.check_entity(caller, entity_id, "read")
            await node.reader.settle(partition_for(entity_id, node.settings.partitions))  # an HTTP process's view
            entity = node.reader.get(entity_id)  # PartitionUnavailable unless served here, recovered
        except Exception:
            entity = None  # the route raises it again and answers it
        if entity is None:
            await self.app(scope, receive, send)
            return
        answer = orjson.dumps(entity, default=str)  # as api.responses.JSON renders it
        scope["route"] = self._routes.get("read")  # as the router would have matched it
        if not self._request_ids:
            await self._answer(send, answer)
            return
        token = REQUEST_ID.set(request_id_of(scope))
        try:
            await self._answer(send, answer)
        finally:
            REQUEST_ID.reset(token)

    # -- POST /api/events -----------------------------------------------------------------
    async def _publish(self, scope: Scope, receive: Receive, send: Send) -> None:
        node = self._node
        settings = node.settings
        limit = settings.max_event_bytes
        content_type: str | None = None
        declared: bytes | None = None
        for name, value in scope["headers"]:
            if name == b"content-type":
                if content_type is None:
                    content_type = value.decode("latin-1")
            elif name == b"content-length":
                if declared is None:
                    declared = value
            elif name == b"x-idempotency-key":
                await self.app(scope, receive, send)  # the answer is kept under the key: the route's job
                return
        if not is_json_type(content_type) or not self._fits(declared, limit):
            await self.app(scope, receive, send)
            return
        messages: list[Message] = []
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":  # the client went away: the route says what then
                await self.app(scope, _replay(messages, receive), send)
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await self.app(scope, _replay(messages, receive), send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        guard = node.guard
        try:  # the route's checks, in its order; the charge (the one with an effect) last
            caller = guard.writer(HTTPConnection(scope))
            wait_timeout(settings, None)
            body = orjson.loads(chunks[0] if len(chunks) == 1 else b"".join(chunks))
            envelope = validate_event(body, now_ms=int(time.time() * 1000), limits=settings.event_limits())
            check_alone(envelope, self._entity_limits)  # EntityTooLarge: the route's 413
            guard.check_entity(caller, entity_of(envelope))
            guard.charge(caller, 1)
        except Exception:
            await self.app(scope, _replay(messages, receive), send)
            return
        token = REQUEST_ID.set(request_id_of(scope)) if self._request_ids else None
        scope["route"] = self._routes.get("publish")  # as the router would have matched it
        try:
            try:
                await node.publisher.publish(envelope)  # from here on, no going back
                node.metrics.published(1, (envelope["source"],))
                answer = orjson.dumps({"eventId": envelope["eventId"], "stream": envelope["stream"]})
            except Exception as exc:
                await self._failed(scope, receive, send, exc)
                return
            await self._answer(send, answer)
        finally:
            if token is not None:
                REQUEST_ID.reset(token)

    @staticmethod
    def _fits(declared: bytes | None, limit: int) -> bool:
        """Whether a ``Content-Length`` (if any) is an integer within ``limit`` (else the route's 400 or 413)."""
        if declared is None:
            return True
        try:
            return int(declared) <= limit
        except ValueError:
            return False

    # -- answers --------------------------------------------------------------------------
    async def _answer(self, send: Send, body: bytes) -> None:
        """200 with a JSON ``body``: the headers :class:`api.responses.JSON` sends, and the request id."""
        headers = [(b"content-length", str(len(body)).encode("latin-1")), JSON_TYPE]
        request_id = REQUEST_ID.get() if self._request_ids else None
        if request_id is not None:
            headers.append((REQUEST_ID_HEADER, request_id.encode()))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _failed(self, scope: Scope, receive: Receive, send: Send, exc: Exception) -> None:
        """Answer an exception raised once the event went to the publisher as FastAPI would: with
        the app's handler of its class (:func:`api.errors.install_error_handlers`: ``PublishFailed``
        is a 503), inside the request-id middleware as Starlette's ``ExceptionMiddleware`` calls it;
        else with the 500 handler, outside that middleware and raised on to the server, as
        Starlette's ``ServerErrorMiddleware`` does."""
        handler = None
        if isinstance(exc, HTTPException) and exc.status_code != 500:
            handler = self._handlers.get(exc.status_code)
        if handler is None:
            found = (k for k in type(exc).__mro__ if k in self._handlers and k is not Exception)
            handler = next((self._handlers[k] for k in found), None)  # Exception's is the 500 handler
        if handler is not None:
            response = await _call(handler, Request(scope, receive), exc)
            await response(scope, receive, self._with_id(send))
            exc.__traceback__ = None
            return
        if self._request_ids:
            REQUEST_ID.set(None)  # the request-id middleware has ended when the 500 handler runs
        unexpected = self._handlers.get(500) or self._handlers.get(Exception)
        if unexpected is not None:
            response = await _call(unexpected, Request(scope), exc)
            await response(scope, receive, send)
        raise exc

    def _with_id(self, send: Send) -> Send:
        """``send`` adding ``X-Request-ID`` to the response start (with request ids on)."""
        request_id = REQUEST_ID.get() if self._request_ids else None
        if request_id is None:
            return send

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (REQUEST_ID_HEADER, request_id.encode())]
            await send(message)

        return send_with_id


async def _call(handler: Any, request: Request, exc: Exception) -> Response:
    """An exception handler's response (a plain ``def`` handler runs in the thread pool, as in Starlette)."""
    if inspect.iscoroutinefunction(handler):
        return cast(Response, await handler(request, exc))
    return cast(Response, await run_in_threadpool(handler, request, exc))
