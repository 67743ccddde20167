"""The id of each HTTP request, for the log lines written while serving it (``FLUX_LOG_FORMAT=json``).

A client's ``X-Request-ID`` (up to 128 printable characters) is kept, else one is made; either way
the answer carries it back in ``X-Request-ID``. Installed only when the logs can show it.
"""

from __future__ import annotations

import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from flux.logs import REQUEST_ID

HEADER = b"x-request-id"
MAX_LENGTH = 128


def _given(scope: Scope) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == HEADER and 0 < len(value) <= MAX_LENGTH and value.isascii() and value.decode().isprintable():
            return str(value.decode())
    return None


def request_id_of(scope: Scope) -> str:
    """The id of the request of ``scope``: the client's ``X-Request-ID`` if usable, else a new one."""
    return _given(scope) or uuid.uuid4().hex


class RequestIdMiddleware:
    """Sets :data:`flux.logs.REQUEST_ID` for the request and returns it in ``X-Request-ID``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve the request with its id in the context."""
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        request_id = request_id_of(scope)
        token = REQUEST_ID.set(request_id)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (HEADER, request_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            REQUEST_ID.reset(token)
