"""The FastAPI application: routes wired to a publisher and a state reader it is given."""

from __future__ import annotations

from functools import partial
from typing import Any, cast

from fastapi import APIRouter, FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from api import ui
from api.auth import Guard
from api.cluster import internal
from api.cluster.forward import Forwarder
from api.cluster.gather import Cluster
from api.cluster.node_calls import NodeCalls
from api.deps import Node, Publisher
from api.errors import install_error_handlers
from api.fast_path import FastPath
from api.live import websocket
from api.live.applied import AppliedOffsets
from api.live.hub import Hub
from api.openapi import describe_configuration
from api.request_id import RequestIdMiddleware
from api.request_metrics import RequestMetrics
from api.responses import JSON
from api.routes import admin, delete, events, health, state
from api.routes import cluster as cluster_routes
from api.routes import history as history_routes
from api.routes import namespaces as namespace_routes
from api.routes import webhooks as webhook_routes
from flux import __version__
from flux.config import Settings
from flux.kafka.idempotency import IdempotencyLog
from flux.kafka.namespace_log import NamespaceLog
from flux.metrics import Metrics
from flux.model.replay import Replays
from flux.model.state import HistoryReader, StateReader


class FluxApp(FastAPI):
    """FastAPI, with what :func:`create_app` puts in front of it: the request metrics, outermost,
    and :class:`api.fast_path.FastPath`."""

    front: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve a request: through the front (which hands on what it does not serve), else FastAPI."""
        if self.front is None:
            await super().__call__(scope, receive, send)
        else:
            await self.front(scope, receive, send)

    async def behind_fast_path(self, scope: Scope, receive: Receive, send: Send) -> None:
        """FastAPI itself: where the fast path hands requests on."""
        await super().__call__(scope, receive, send)


def create_app(
    settings: Settings,
    publisher: Publisher,
    reader: StateReader,
    metrics: Metrics,
    applied: AppliedOffsets,
    namespaces: NamespaceLog,
    history: HistoryReader,
    idempotency: IdempotencyLog,
    replays: Replays,
    *,
    fast_path: bool = True,
) -> FastAPI:
    """A Flux HTTP app. Starting and stopping the publisher, the reader, the namespace log and the
    change relay is the caller's job.

    ``applied`` is fed by the change relay; so is the node's ``hub`` (the WebSocket subscriptions,
    see :func:`app_node`). ``fast_path`` puts :class:`api.fast_path.FastPath` in front of FastAPI's
    own middleware stack, for the common single-event POSTs and entity reads.
    """
    app = FluxApp(
        title="Flux",
        version=__version__,
        description="Event-sourced world state: publish events, read merged entity state.",
        default_response_class=JSON,
    )
    calls = NodeCalls.from_settings(settings)
    cluster = Cluster(
        reader, history, calls, settings.partitions, settings.rebalance_wait_s, settings.list_at_max_events
    )
    app.state.node = Node(
        settings=settings,
        publisher=publisher,
        reader=reader,
        history=history,
        metrics=metrics,
        applied=applied,
        namespaces=namespaces,
        idempotency=idempotency,
        replays=replays,
        guard=Guard(settings, namespaces, calls),
        calls=calls,
        forwarder=Forwarder(calls),
        cluster=cluster,
        hub=Hub(settings, reader, metrics, cluster),
    )
    node = app_node(app)
    namespaces.on_change(partial(node.hub.namespace_changed, guard=node.guard))  # void tokens close sockets
    install_error_handlers(app, node.forwarder, reader)
    request_ids = settings.log_format == "json" or settings.access_log
    if request_ids:
        app.add_middleware(RequestIdMiddleware)  # only where the logs can show the id: no cost otherwise
    for module in (
        events,
        state,
        delete,
        namespace_routes,
        webhook_routes,
        history_routes,
        admin,
        cluster_routes,
        internal,
        websocket,
        health,
        ui,
    ):
        app.include_router(module.router)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            app.openapi_schema = describe_configuration(schema, settings)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    inner: ASGIApp = app.behind_fast_path
    if fast_path:
        routes = {
            "publish": _route(events.router, "/api/events", "POST"),
            "read": _route(state.router, "/api/state/entities/{entity_id:path}", "GET"),
        }
        inner = FastPath(inner, node, app.exception_handlers, request_ids, routes)
    app.front = RequestMetrics(inner, metrics=metrics)  # outermost: times the whole answer, fast or not
    return app


def _route(router: APIRouter, path: str, method: str) -> APIRoute:
    """The route of ``router`` for ``method`` on the path template ``path``."""
    return next(r for r in router.routes if isinstance(r, APIRoute) and r.path == path and method in (r.methods or ()))


def app_node(app: FastAPI) -> Node:
    """The parts of the node ``app`` serves from (see :class:`api.deps.Node`)."""
    return cast(Node, app.state.node)
