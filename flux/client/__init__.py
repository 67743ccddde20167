"""The Python client of Flux's HTTP and WebSocket API (docs/client.md).

:class:`FluxClient` (blocking) and :class:`AsyncFluxClient` (asyncio) publish, read, page through
lists and history, delete, manage namespaces and replays, with typed results, errors as
exceptions (:class:`FluxError` and its kinds) and retries that never apply a publish twice (each
event carries its eventId from the first try, each call one ``X-Idempotency-Key``);
:meth:`AsyncFluxClient.subscribe` streams live changes and re-syncs after a lost connection.

It talks to Flux over the network only; of the server's code it uses the pure eventId generator
(``flux/model/ids.py``).
"""

from flux.client.batch import MAX_BATCH_BYTES, MAX_BATCH_EVENTS, event
from flux.client.clients import AsyncFluxClient, FluxClient
from flux.client.errors import (
    Conflict,
    FluxError,
    Forbidden,
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    ServerError,
    SubscriptionError,
    Unauthorized,
    Unavailable,
    WaitTimeout,
)
from flux.client.models import (
    BatchDeleteResult,
    BatchItem,
    BatchResult,
    Change,
    DeleteError,
    DeleteResult,
    Entity,
    EntityDeleted,
    EntityUpdate,
    MetricsUpdate,
    Namespace,
    NamespaceDeleted,
    NamespaceToken,
    PropertyRemoved,
    PublishResult,
    Readiness,
    Reconnected,
    ReplayJob,
    ReplayPartition,
    ReplayReport,
    Snapshot,
    SnapshotComplete,
    StateUpdate,
    StoredEvent,
)
from flux.client.retry import FOREVER, NO_RETRY, RetryPolicy
from flux.client.subscription import Subscription

__all__ = [
    "FOREVER",
    "MAX_BATCH_BYTES",
    "MAX_BATCH_EVENTS",
    "NO_RETRY",
    "AsyncFluxClient",
    "BatchDeleteResult",
    "BatchItem",
    "BatchResult",
    "Change",
    "Conflict",
    "DeleteError",
    "DeleteResult",
    "Entity",
    "EntityDeleted",
    "EntityUpdate",
    "FluxClient",
    "FluxError",
    "Forbidden",
    "InvalidRequest",
    "MetricsUpdate",
    "Namespace",
    "NamespaceDeleted",
    "NamespaceToken",
    "NotFound",
    "PayloadTooLarge",
    "PropertyRemoved",
    "PublishResult",
    "RateLimited",
    "Readiness",
    "Reconnected",
    "ReplayJob",
    "ReplayPartition",
    "ReplayReport",
    "RetryPolicy",
    "ServerError",
    "Snapshot",
    "SnapshotComplete",
    "StateUpdate",
    "StoredEvent",
    "Subscription",
    "SubscriptionError",
    "Unauthorized",
    "Unavailable",
    "WaitTimeout",
    "event",
]
