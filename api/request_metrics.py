"""How long each HTTP request takes, by route template, method and status (``flux_http_request_duration_ms``).

A pure ASGI middleware: it times the request from its start to the last byte of the answer and
counts it in the process's histograms (:meth:`flux.metrics.Metrics.observe`), keyed by the
template of the route that matched (``/api/state/entities/{entity_id:path}``, never the path
itself: the labels stay few), the method (the usual ones, else ``other``) and the status. A
successful ``POST /api/events`` or ``/api/events/batch`` also counts in ``flux_publish_latency_ms``.
WebSockets are not timed (their connections are counted), nor the control channel's sync.
"""

from __future__ import annotations

import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from flux.metrics import PUBLISH, REQUEST, Metrics

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
PUBLISH_ROUTES = frozenset({"/api/events", "/api/events/batch"})
UNTIMED_PREFIX = "/control/"
UNMATCHED = "unmatched"


def route_template(scope: Scope) -> str:
    """The template of the route the router matched for ``scope`` (``unmatched`` when none did)."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) and path else UNMATCHED


class RequestMetrics:
    """Times every HTTP request into ``metrics`` (see the module docstring)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self._metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve the request and count how long it took."""
        if scope["type"] != "http" or scope["path"].startswith(UNTIMED_PREFIX):
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500  # an exception before the answer started

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            ms = (time.perf_counter() - start) * 1000
            method = scope["method"] if scope["method"] in METHODS else "other"
            route = route_template(scope)
            self._metrics.observe((REQUEST, route, method, str(status)), ms)
            if method == "POST" and 200 <= status < 300 and route in PUBLISH_ROUTES:
                self._metrics.observe(PUBLISH, ms)
