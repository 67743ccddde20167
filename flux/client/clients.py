"""The clients: :class:`AsyncFluxClient` (on ``httpx.AsyncClient``) and :class:`FluxClient` (on
``httpx.Client``), with the same methods.

Both send the calls that :class:`~flux.client.operations.Operations` builds and run them through
an :class:`~flux.client.exchange.Exchange` (retries, errors); they differ only in how they wait.
The URL is ``url``, else ``FLUX_URL``, else ``http://localhost:3000``; the token is ``token``,
else ``FLUX_TOKEN``, else none.
"""

from __future__ import annotations

import asyncio
import os
import time
import weakref
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from typing import Any, TypeVar

import httpx

from flux.client.batch import MAX_BATCH_BYTES, MAX_BATCH_EVENTS, BatchLimits
from flux.client.errors import ServerError, Unavailable
from flux.client.exchange import Call, Exchange, Page, TryAgain, auth_headers
from flux.client.models import (
    BatchDeleteResult,
    BatchResult,
    DeleteResult,
    Entity,
    Namespace,
    NamespaceDeleted,
    NamespaceToken,
    PublishResult,
    Readiness,
    ReplayJob,
    StoredEvent,
)
from flux.client.operations import Operations, Time
from flux.client.retry import FOREVER, RetryPolicy
from flux.client.subscription import Subscription

T = TypeVar("T")
DEFAULT_URL = "http://localhost:3000"
DEFAULT_TIMEOUT_S = 30.0
REPLAY_POLL_S = 0.5
Namespaces = list[Namespace]  # spelled once here: inside the classes, ``list`` is a method
ReplayJobs = list[ReplayJob]


class ClientBase:
    """What both clients hold: the URL, the token, the retry policy and the operations."""

    def __init__(
        self,
        url: str | None,
        token: str | None,
        retry: RetryPolicy,
        idempotency_keys: bool,
        max_batch_events: int,
        max_batch_bytes: int,
        http: httpx.Client | httpx.AsyncClient | None,
    ) -> None:
        given = None if http is None else str(http.base_url).rstrip("/") or None
        self.url = url or given or os.environ.get("FLUX_URL") or DEFAULT_URL
        self.token = (token if token is not None else os.environ.get("FLUX_TOKEN")) or None
        self.retry = retry
        self.operations = Operations(idempotency_keys, BatchLimits(max_batch_events, max_batch_bytes))
        self._headers = auth_headers(self.token)

    def _exchange(self, call: Call[T]) -> Exchange[T]:
        return Exchange(call, self.retry, self._headers)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"


class AsyncFluxClient(ClientBase):
    """An asyncio client of a Flux node; use it as ``async with AsyncFluxClient() as flux: ...``.

    ``retry``: how calls are retried (429, 502, 503 and connection errors); ``idempotency_keys``:
    whether publishes carry an ``X-Idempotency-Key`` (a retry after a lost answer then gets the
    first answer and publishes nothing; without one it publishes again, applied once by eventId);
    ``max_batch_events`` / ``max_batch_bytes``: how :meth:`publish_batch` cuts batches (the
    server's ``FLUX_MAX_BATCH_EVENTS`` / ``FLUX_MAX_BATCH_BYTES``); ``transport`` (e.g.
    ``httpx.ASGITransport``) or a ready ``http`` client (not closed by this one) replace the default.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        token: str | None = None,
        timeout: float = DEFAULT_TIMEOUT_S,
        retry: RetryPolicy | None = None,
        idempotency_keys: bool = True,
        max_batch_events: int = MAX_BATCH_EVENTS,
        max_batch_bytes: int = MAX_BATCH_BYTES,
        transport: httpx.AsyncBaseTransport | None = None,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        super().__init__(url, token, retry or RetryPolicy(), idempotency_keys, max_batch_events, max_batch_bytes, http)
        self._owned = http is None
        self.http = http or httpx.AsyncClient(base_url=self.url, timeout=timeout, transport=transport)
        self._subscriptions: weakref.WeakSet[Subscription] = weakref.WeakSet()

    async def __aenter__(self) -> AsyncFluxClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the subscriptions and the HTTP client (unless it was given)."""
        for subscription in list(self._subscriptions):
            await subscription.close()
        if self._owned:
            await self.http.aclose()

    async def run(self, call: Call[T]) -> T:
        """Send ``call``, retrying as the policy and the call allow; its result or its FluxError."""
        exchange = self._exchange(call)
        while True:
            try:
                response = await self.http.request(
                    call.method, call.url, params=call.params, content=call.body, headers=exchange.headers
                )
                return exchange.outcome(response)
            except httpx.TransportError as exc:
                delay = exchange.failed(exc)
            except TryAgain as again:
                delay = again.delay
            await asyncio.sleep(delay)

    async def _pages(self, call: Call[Page[T]] | None) -> AsyncIterator[T]:
        while call is not None:
            page = await self.run(call)
            for item in page.items:
                yield item
            call = page.next

    # -- events ----------------------------------------------------------------------------------
    async def publish(
        self,
        entity_id: str,
        properties: Mapping[str, Any],
        *,
        stream: str,
        source: str,
        timestamp: int | None = None,
        event_id: str | None = None,
        wait: bool = False,
        idempotency_key: str | None = None,
    ) -> PublishResult:
        """Publish one event; with ``wait``, answer once it is applied (a read afterwards sees it)."""
        return await self.run(
            self.operations.publish(
                entity_id,
                properties,
                stream=stream,
                source=source,
                timestamp=timestamp,
                event_id=event_id,
                wait=wait,
                idempotency_key=idempotency_key,
            )
        )

    async def publish_batch(
        self,
        events: Iterable[Mapping[str, Any]],
        *,
        stream: str | None = None,
        source: str | None = None,
        wait: bool = False,
        idempotency_key: str | None = None,
        max_events: int | None = None,
        max_bytes: int | None = None,
    ) -> BatchResult:
        """Publish envelopes (see :func:`flux.client.event`) in as few requests as the limits allow;
        ``stream`` and ``source`` fill in envelopes without them. Refused events fail one by one."""
        plan = self.operations.publish_batch(
            events,
            stream=stream,
            source=source,
            wait=wait,
            idempotency_key=idempotency_key,
            max_events=max_events,
            max_bytes=max_bytes,
        )
        while (call := plan.next_call()) is not None:
            plan.take(await self.run(call))
        return plan.result()

    def history(
        self,
        entity: str | None = None,
        *,
        prefix: str | None = None,
        namespace: str | None = None,
        since: Time | None = None,
        until: Time | None = None,
        order: str = "asc",
        stream: str | None = None,
        source: str | None = None,
        page_size: int | None = None,
    ) -> AsyncIterator[StoredEvent]:
        """Stored events (default window: the last 24 h), every page in turn."""
        return self._pages(
            self.operations.history(
                entity,
                prefix=prefix,
                namespace=namespace,
                since=since,
                until=until,
                order=order,
                stream=stream,
                source=source,
                page_size=page_size,
            )
        )

    # -- state -----------------------------------------------------------------------------------
    async def get(self, entity_id: str, at: Time | None = None) -> Entity | None:
        """One entity (as it was at ``at``), or None if there is none."""
        return await self.run(self.operations.get(entity_id, at))

    def list(
        self,
        prefix: str | None = None,
        *,
        namespace: str | None = None,
        at: Time | None = None,
        page_size: int | None = None,
    ) -> AsyncIterator[Entity]:
        """Entities in id order (as they were at ``at``), every page in turn."""
        return self._pages(self.operations.entities(prefix, namespace, at, page_size))

    async def delete(self, entity_id: str, *, wait: bool = False) -> DeleteResult:
        """Delete one entity (a tombstone event); :class:`~flux.client.NotFound` if there is none."""
        return await self.run(self.operations.delete(entity_id, wait))

    async def delete_many(
        self,
        *,
        prefix: str | None = None,
        namespace: str | None = None,
        entity_ids: Iterable[str] | None = None,
        wait: bool = False,
    ) -> BatchDeleteResult:
        """Delete by exactly one filter, all tombstones in one transaction."""
        return await self.run(self.operations.delete_many(prefix, namespace, entity_ids, wait))

    # -- namespaces ------------------------------------------------------------------------------
    async def register_namespace(self, name: str) -> NamespaceToken:
        """Register a namespace (admin token); keep its token, shown this once."""
        return await self.run(self.operations.register_namespace(name))

    async def list_namespaces(self) -> Namespaces:
        """Every namespace the token may see."""
        return await self.run(self.operations.list_namespaces())

    async def get_namespace(self, name: str) -> Namespace | None:
        """One namespace, or None."""
        return await self.run(self.operations.get_namespace(name))

    async def rotate_token(self, name: str) -> NamespaceToken:
        """A new token for the namespace (admin); the old one stops working at once."""
        return await self.run(self.operations.rotate_token(name))

    async def delete_namespace(self, name: str, *, purge: bool = False) -> NamespaceDeleted:
        """Remove a namespace (admin); ``purge`` deletes its entities too."""
        return await self.run(self.operations.delete_namespace(name, purge))

    # -- replays ---------------------------------------------------------------------------------
    async def start_replay(
        self,
        *,
        from_beginning: bool = False,
        from_timestamp: Time | None = None,
        from_offsets: Mapping[int, int] | str | None = None,
        to_timestamp: Time | None = None,
    ) -> ReplayJob:
        """Start re-deriving state from the events topic (admin); give exactly one start."""
        return await self.run(
            self.operations.start_replay(
                from_beginning=from_beginning,
                from_timestamp=from_timestamp,
                from_offsets=from_offsets,
                to_timestamp=to_timestamp,
            )
        )

    async def get_replay(self, job_id: str) -> ReplayJob:
        """A replay job's progress (admin)."""
        return await self.run(self.operations.get_replay(job_id))

    async def list_replays(self) -> ReplayJobs:
        """This node's replay jobs, newest first (admin)."""
        return await self.run(self.operations.list_replays())

    async def cancel_replay(self, job_id: str) -> ReplayJob:
        """Cancel a replay before it switches (admin); a finished job is shown as it is."""
        return await self.run(self.operations.cancel_replay(job_id))

    async def wait_replay(
        self, job_id: str, *, poll_s: float = REPLAY_POLL_S, timeout_s: float | None = None
    ) -> ReplayJob:
        """Poll a replay job until it is done, failed or cancelled; :class:`TimeoutError` after ``timeout_s``."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while not (job := await self.get_replay(job_id)).finished:
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"replay {job_id} is still {job.status} after {timeout_s} s")
            await asyncio.sleep(poll_s)
        return job

    # -- operations ------------------------------------------------------------------------------
    async def health(self) -> bool:
        """Whether the node answers ``/health`` with ``ok`` (tried once; no answer is False)."""
        try:
            return await self.run(self.operations.health())
        except (Unavailable, ServerError):
            return False

    async def ready(self) -> Readiness:
        """The node's readiness (``/ready``, tried once; not ready is an answer, not an error)."""
        return await self.run(self.operations.ready())

    # -- live changes ----------------------------------------------------------------------------
    def subscribe(
        self,
        patterns: str | Iterable[str],
        *,
        snapshot: bool = True,
        format: str = "property",
        resync: bool = True,
        metrics: bool = False,
        reconnect: RetryPolicy = FOREVER,
    ) -> Subscription:
        """Live changes of the entities matching ``patterns`` (ids, ``prefix*``, ``*``), reconnecting and
        re-syncing with a snapshot after each drop; see :class:`~flux.client.subscription.Subscription`."""
        subscription = Subscription(
            self.url,
            patterns,
            token=self.token,
            snapshot=snapshot,
            format=format,
            resync=resync,
            metrics=metrics,
            reconnect=reconnect,
        )
        self._subscriptions.add(subscription)
        return subscription


class FluxClient(ClientBase):
    """A blocking client of a Flux node, with the methods of :class:`AsyncFluxClient` but
    :meth:`~AsyncFluxClient.subscribe`; use it as ``with FluxClient() as flux: ...``."""

    def __init__(
        self,
        url: str | None = None,
        *,
        token: str | None = None,
        timeout: float = DEFAULT_TIMEOUT_S,
        retry: RetryPolicy | None = None,
        idempotency_keys: bool = True,
        max_batch_events: int = MAX_BATCH_EVENTS,
        max_batch_bytes: int = MAX_BATCH_BYTES,
        transport: httpx.BaseTransport | None = None,
        http: httpx.Client | None = None,
    ) -> None:
        super().__init__(url, token, retry or RetryPolicy(), idempotency_keys, max_batch_events, max_batch_bytes, http)
        self._owned = http is None
        self.http = http or httpx.Client(base_url=self.url, timeout=timeout, transport=transport)

    def __enter__(self) -> FluxClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the HTTP client (unless it was given)."""
        if self._owned:
            self.http.close()

    def run(self, call: Call[T]) -> T:
        """Send ``call``, retrying as the policy and the call allow; its result or its FluxError."""
        exchange = self._exchange(call)
        while True:
            try:
                response = self.http.request(
                    call.method, call.url, params=call.params, content=call.body, headers=exchange.headers
                )
                return exchange.outcome(response)
            except httpx.TransportError as exc:
                delay = exchange.failed(exc)
            except TryAgain as again:
                delay = again.delay
            time.sleep(delay)

    def _pages(self, call: Call[Page[T]] | None) -> Iterator[T]:
        while call is not None:
            page = self.run(call)
            yield from page.items
            call = page.next

    # -- events ----------------------------------------------------------------------------------
    def publish(
        self,
        entity_id: str,
        properties: Mapping[str, Any],
        *,
        stream: str,
        source: str,
        timestamp: int | None = None,
        event_id: str | None = None,
        wait: bool = False,
        idempotency_key: str | None = None,
    ) -> PublishResult:
        """Publish one event; with ``wait``, answer once it is applied (a read afterwards sees it)."""
        return self.run(
            self.operations.publish(
                entity_id,
                properties,
                stream=stream,
                source=source,
                timestamp=timestamp,
                event_id=event_id,
                wait=wait,
                idempotency_key=idempotency_key,
            )
        )

    def publish_batch(
        self,
        events: Iterable[Mapping[str, Any]],
        *,
        stream: str | None = None,
        source: str | None = None,
        wait: bool = False,
        idempotency_key: str | None = None,
        max_events: int | None = None,
        max_bytes: int | None = None,
    ) -> BatchResult:
        """Publish envelopes in as few requests as the limits allow (see :meth:`AsyncFluxClient.publish_batch`)."""
        plan = self.operations.publish_batch(
            events,
            stream=stream,
            source=source,
            wait=wait,
            idempotency_key=idempotency_key,
            max_events=max_events,
            max_bytes=max_bytes,
        )
        while (call := plan.next_call()) is not None:
            plan.take(self.run(call))
        return plan.result()

    def history(
        self,
        entity: str | None = None,
        *,
        prefix: str | None = None,
        namespace: str | None = None,
        since: Time | None = None,
        until: Time | None = None,
        order: str = "asc",
        stream: str | None = None,
        source: str | None = None,
        page_size: int | None = None,
    ) -> Iterator[StoredEvent]:
        """Stored events (default window: the last 24 h), every page in turn."""
        return self._pages(
            self.operations.history(
                entity,
                prefix=prefix,
                namespace=namespace,
                since=since,
                until=until,
                order=order,
                stream=stream,
                source=source,
                page_size=page_size,
            )
        )

    # -- state -----------------------------------------------------------------------------------
    def get(self, entity_id: str, at: Time | None = None) -> Entity | None:
        """One entity (as it was at ``at``), or None if there is none."""
        return self.run(self.operations.get(entity_id, at))

    def list(
        self,
        prefix: str | None = None,
        *,
        namespace: str | None = None,
        at: Time | None = None,
        page_size: int | None = None,
    ) -> Iterator[Entity]:
        """Entities in id order (as they were at ``at``), every page in turn."""
        return self._pages(self.operations.entities(prefix, namespace, at, page_size))

    def delete(self, entity_id: str, *, wait: bool = False) -> DeleteResult:
        """Delete one entity (a tombstone event); :class:`~flux.client.NotFound` if there is none."""
        return self.run(self.operations.delete(entity_id, wait))

    def delete_many(
        self,
        *,
        prefix: str | None = None,
        namespace: str | None = None,
        entity_ids: Iterable[str] | None = None,
        wait: bool = False,
    ) -> BatchDeleteResult:
        """Delete by exactly one filter, all tombstones in one transaction."""
        return self.run(self.operations.delete_many(prefix, namespace, entity_ids, wait))

    # -- namespaces ------------------------------------------------------------------------------
    def register_namespace(self, name: str) -> NamespaceToken:
        """Register a namespace (admin token); keep its token, shown this once."""
        return self.run(self.operations.register_namespace(name))

    def list_namespaces(self) -> Namespaces:
        """Every namespace the token may see."""
        return self.run(self.operations.list_namespaces())

    def get_namespace(self, name: str) -> Namespace | None:
        """One namespace, or None."""
        return self.run(self.operations.get_namespace(name))

    def rotate_token(self, name: str) -> NamespaceToken:
        """A new token for the namespace (admin); the old one stops working at once."""
        return self.run(self.operations.rotate_token(name))

    def delete_namespace(self, name: str, *, purge: bool = False) -> NamespaceDeleted:
        """Remove a namespace (admin); ``purge`` deletes its entities too."""
        return self.run(self.operations.delete_namespace(name, purge))

    # -- replays ---------------------------------------------------------------------------------
    def start_replay(
        self,
        *,
        from_beginning: bool = False,
        from_timestamp: Time | None = None,
        from_offsets: Mapping[int, int] | str | None = None,
        to_timestamp: Time | None = None,
    ) -> ReplayJob:
        """Start re-deriving state from the events topic (admin); give exactly one start."""
        return self.run(
            self.operations.start_replay(
                from_beginning=from_beginning,
                from_timestamp=from_timestamp,
                from_offsets=from_offsets,
                to_timestamp=to_timestamp,
            )
        )

    def get_replay(self, job_id: str) -> ReplayJob:
        """A replay job's progress (admin)."""
        return self.run(self.operations.get_replay(job_id))

    def list_replays(self) -> ReplayJobs:
        """This node's replay jobs, newest first (admin)."""
        return self.run(self.operations.list_replays())

    def cancel_replay(self, job_id: str) -> ReplayJob:
        """Cancel a replay before it switches (admin); a finished job is shown as it is."""
        return self.run(self.operations.cancel_replay(job_id))

    def wait_replay(self, job_id: str, *, poll_s: float = REPLAY_POLL_S, timeout_s: float | None = None) -> ReplayJob:
        """Poll a replay job until it is done, failed or cancelled; :class:`TimeoutError` after ``timeout_s``."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while not (job := self.get_replay(job_id)).finished:
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"replay {job_id} is still {job.status} after {timeout_s} s")
            time.sleep(poll_s)
        return job

    # -- operations ------------------------------------------------------------------------------
    def health(self) -> bool:
        """Whether the node answers ``/health`` with ``ok`` (tried once; no answer is False)."""
        try:
            return self.run(self.operations.health())
        except (Unavailable, ServerError):
            return False

    def ready(self) -> Readiness:
        """The node's readiness (``/ready``, tried once; not ready is an answer, not an error)."""
        return self.run(self.operations.ready())
