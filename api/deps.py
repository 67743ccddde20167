"""What a route needs, declared in its signature and typed: the node's parts, and who is calling.

A route takes ``node: NodeDep`` for the parts of the node it serves from (settings, publisher,
state and history readers, the namespace registry...), and one of ``Reader``, ``Writer`` or
``Admin`` for the caller, checked by the :class:`api.auth.Guard`'s rule for that kind of call.
``Writer`` and ``Admin`` also declare the bearer-token scheme, so the OpenAPI document's security
comes from the same place as the check (:mod:`api.openapi` adapts it to the configuration:
nowhere with auth off, on reads too with private reads).

The dependencies are ``async def`` although they never wait: FastAPI runs a plain ``def``
dependency in its thread pool, a hop that cost about a fifth of a single-event POST's time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Protocol, cast

from fastapi import Depends, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.requests import HTTPConnection

from api.auth import Caller, Guard
from api.cluster.forward import Forwarder
from api.cluster.gather import Cluster
from api.cluster.node_calls import NodeCalls
from api.live.applied import AppliedOffsets
from api.live.hub import Hub
from api.models import BEARER
from flux.config import Settings
from flux.kafka.idempotency import IdempotencyLog
from flux.kafka.namespace_log import NamespaceLog
from flux.kafka.publisher import Offsets
from flux.metrics import Metrics
from flux.model.events import Envelope
from flux.model.replay import Replays
from flux.model.state import HistoryReader, StateReader


class Publisher(Protocol):
    """What the routes need of the events-topic writer (:class:`flux.kafka.publisher.EventPublisher`):
    both calls return once the events are acknowledged, with where they landed; they raise
    :class:`flux.kafka.publisher.PublishFailed` when the broker did not acknowledge."""

    async def publish(self, envelope: Envelope) -> Offsets:
        """Write one event."""
        ...

    async def publish_batch(self, envelopes: list[Envelope]) -> Offsets:
        """Write a batch atomically."""
        ...


@dataclass(frozen=True)
class Node:
    """The parts of a node the HTTP API serves from (built by :func:`api.app.create_app`)."""

    settings: Settings
    publisher: Publisher
    reader: StateReader
    history: HistoryReader
    metrics: Metrics
    applied: AppliedOffsets
    namespaces: NamespaceLog
    idempotency: IdempotencyLog
    replays: Replays
    guard: Guard
    calls: NodeCalls
    forwarder: Forwarder
    cluster: Cluster
    hub: Hub


def node_of(connection: HTTPConnection) -> Node:
    """The node an HTTP request or WebSocket connection is served by."""
    return cast(Node, connection.app.state.node)


async def _node(connection: HTTPConnection) -> Node:
    """:func:`node_of` as a dependency (FastAPI runs a plain ``def`` dependency in its thread pool)."""
    return cast(Node, connection.app.state.node)


NodeDep = Annotated[Node, Depends(_node)]

bearer = HTTPBearer(
    auto_error=False,  # the guard decides, with Flux's own error shapes
    scheme_name=BEARER,
    description="A namespace token, or FLUX_ADMIN_TOKEN for any namespace and for namespace administration",
)
BearerToken = Annotated[HTTPAuthorizationCredentials | None, Security(bearer)]


async def reader(request: Request, node: NodeDep) -> Caller:
    """The caller of a read (401 without a valid token when reads are private)."""
    return node.guard.reader(request)


async def writer(request: Request, node: NodeDep, _: BearerToken) -> Caller:
    """The caller of a write (401 without a valid token)."""
    return node.guard.writer(request)


async def admin(request: Request, node: NodeDep, _: BearerToken) -> Caller:
    """The caller of an admin operation (401 without a token, 403 with a namespace's)."""
    return node.guard.admin(request)


Reader = Annotated[Caller, Depends(reader)]
Writer = Annotated[Caller, Depends(writer)]
Admin = Annotated[Caller, Depends(admin)]
