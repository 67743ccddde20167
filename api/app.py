"""The FastAPI application: routes wired to a publisher and a state reader it is given."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from api import (
    routes_admin,
    routes_delete,
    routes_events,
    routes_health,
    routes_history,
    routes_internal,
    routes_namespaces,
    routes_state,
    websocket,
)
from api.applied import AppliedOffsets
from api.auth import Guard
from api.cluster import Cluster
from api.errors import install_error_handlers
from api.forward import Forwarder
from api.openapi import describe_configuration
from api.responses import JSON
from flux import __version__
from flux.config import Settings
from flux.idempotency import IdempotencyLog
from flux.metrics import Metrics
from flux.namespace_log import NamespaceLog
from flux.publisher import EventPublisher
from flux.replay import Replays
from flux.state import HistoryReader, StateReader


def create_app(
    settings: Settings,
    publisher: EventPublisher,
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

    ``applied`` is fed by the change relay; so is ``app.state.hub`` (the WebSocket subscriptions).
    """
    app = FastAPI(
        title="Flux",
        version=__version__,
        description="Event-sourced world state: publish events, read merged entity state.",
        default_response_class=JSON,
    )
    app.state.settings = settings
    app.state.publisher = publisher
    app.state.reader = reader
    app.state.metrics = metrics
    app.state.applied = applied
    app.state.namespaces = namespaces
    app.state.history = history
    app.state.idempotency = idempotency
    app.state.replays = replays
    app.state.guard = Guard(settings, namespaces)
    app.state.forwarder = Forwarder(settings.node_url(), settings.forward_timeout_s)
    app.state.cluster = Cluster(
        reader, history, settings.node_url(), settings.partitions, settings.forward_timeout_s, settings.rebalance_wait_s
    )
    app.state.hub = websocket.Hub(settings, reader, metrics, app.state.cluster)
    install_error_handlers(app)
    app.include_router(routes_events.router)
    app.include_router(routes_state.router)
    app.include_router(routes_delete.router)
    app.include_router(routes_namespaces.router)
    app.include_router(routes_history.router)
    app.include_router(routes_admin.router)
    app.include_router(routes_internal.router)
    app.include_router(websocket.router)
    app.include_router(routes_health.router)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            app.openapi_schema = describe_configuration(schema, settings)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app
