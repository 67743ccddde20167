"""The FastAPI application: routes wired to a publisher and a state reader it is given."""

from __future__ import annotations

from functools import partial
from typing import Any, cast

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from api import ui
from api.auth import Guard
from api.cluster import internal
from api.cluster.forward import Forwarder
from api.cluster.gather import Cluster
from api.cluster.node_calls import NodeCalls
from api.deps import Node, Publisher
from api.errors import install_error_handlers
from api.live import websocket
from api.live.applied import AppliedOffsets
from api.live.hub import Hub
from api.openapi import describe_configuration
from api.request_id import RequestIdMiddleware
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
) -> FastAPI:
    """A Flux HTTP app. Starting and stopping the publisher, the reader, the namespace log and the
    change relay is the caller's job.

    ``applied`` is fed by the change relay; so is the node's ``hub`` (the WebSocket subscriptions,
    see :func:`app_node`).
    """
    app = FastAPI(
        title="Flux",
        version=__version__,
        description="Event-sourced world state: publish events, read merged entity state.",
        default_response_class=JSON,
    )
    calls = NodeCalls.from_settings(settings)
    cluster = Cluster(reader, history, calls, settings.partitions, settings.rebalance_wait_s)
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
    if settings.log_format == "json" or settings.access_log:
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
    return app


def app_node(app: FastAPI) -> Node:
    """The parts of the node ``app`` serves from (see :class:`api.deps.Node`)."""
    return cast(Node, app.state.node)
