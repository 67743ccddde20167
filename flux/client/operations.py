"""Every operation of the HTTP API as a :class:`~flux.client.exchange.Call`: path, query, body,
idempotency key, retry safety and the decoding of the answer into typed results.

:class:`Operations` builds them; the clients only send them. Lists come a page at a time
(:class:`~flux.client.exchange.Page`), each page with the call of the next one, taken from the
answer's ``Link: <...>; rel="next"`` header.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
import orjson

from flux.client.batch import BatchLimits, BatchPlan, event, with_event_id
from flux.client.exchange import Call, Page, Safety
from flux.client.models import (
    BatchDeleteResult,
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

T = TypeVar("T")
Time = int | str | datetime
"""A time: Unix epoch milliseconds, RFC 3339 with a zone, or a timezone-aware datetime."""

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MILLISECOND = timedelta(milliseconds=1)
ENTITIES = "/api/state/entities"
REPLAYS = "/api/admin/replay"


def time_param(value: Time) -> int | str:
    """``value`` as the API takes a time: epoch ms for a datetime (which must have a timezone)."""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("a datetime needs a timezone (Flux cannot tell which local time is meant)")
        return (value - EPOCH) // MILLISECOND
    return value


def entity_path(entity_id: str) -> str:
    """The path of one entity. The id may hold any character: every one that needs it is
    percent-escaped once ('/' stays, as the server takes the rest of the path as the id)."""
    return f"{ENTITIES}/{quote(entity_id, safe='/')}"


def _query(**values: object) -> dict[str, str]:
    """Query parameters: None left out, booleans as true/false, times as the API takes them."""
    query: dict[str, str] = {}
    for name, value in values.items():
        if value is None:
            continue
        if isinstance(value, bool):
            query[name] = "true" if value else "false"
        elif isinstance(value, datetime):
            query[name] = str(time_param(value))
        else:
            query[name] = str(value)
    return query


def _json(response: httpx.Response) -> Any:
    return response.json()


def _or_none(decode: Callable[[Mapping[str, Any]], T]) -> Callable[[httpx.Response], T | None]:
    """A decoder of one object whose 404 means None."""

    def read(response: httpx.Response) -> T | None:
        return None if response.status_code == 404 else decode(_json(response))

    return read


def _one(decode: Callable[[Mapping[str, Any]], T]) -> Callable[[httpx.Response], T]:
    def read(response: httpx.Response) -> T:
        return decode(_json(response))

    return read


def _many(decode: Callable[[Mapping[str, Any]], T]) -> Callable[[httpx.Response], list[T]]:
    def read(response: httpx.Response) -> list[T]:
        return [decode(item) for item in _json(response)]

    return read


def page_call(url: str, params: Mapping[str, str] | None, decode: Callable[[Mapping[str, Any]], T]) -> Call[Page[T]]:
    """The call of a page of a list; its result holds the call of the next page (``Link: rel="next"``)."""

    def read(response: httpx.Response) -> Page[T]:
        items = [decode(item) for item in _json(response)]
        link = response.links.get("next", {}).get("url")
        return Page(items, None if link is None else page_call(link, None, decode))

    return Call("GET", url, read, params=params)


def _published(response: httpx.Response) -> PublishResult:
    return PublishResult.from_json(_json(response), response.headers.get("idempotent-replayed") == "true")


def _healthy(response: httpx.Response) -> bool:
    return bool(_json(response).get("status") == "ok")


class Operations:
    """Builds the calls of the API for a client: ``idempotency_keys`` says whether publishes carry an
    ``X-Idempotency-Key`` (a fresh one per call unless given), ``limits`` how batches are cut."""

    def __init__(self, idempotency_keys: bool, limits: BatchLimits) -> None:
        self.idempotency_keys = idempotency_keys
        self.limits = limits

    def _key(self, given: str | None) -> str | None:
        if given is not None:
            return given
        return uuid.uuid4().hex if self.idempotency_keys else None

    # -- events ----------------------------------------------------------------------------------
    def publish(
        self,
        entity_id: str,
        properties: Mapping[str, Any],
        *,
        stream: str,
        source: str,
        timestamp: int | None,
        event_id: str | None,
        wait: bool,
        idempotency_key: str | None,
    ) -> Call[PublishResult]:
        """``POST /api/events``: repeatable, as the event carries an eventId (and, keyed, a repeat is
        answered with the first answer and publishes nothing)."""
        envelope = event(entity_id, properties, stream=stream, source=source, timestamp=timestamp, event_id=event_id)
        return Call(
            "POST",
            "/api/events",
            _published,
            params=_query(wait=wait or None),
            body=orjson.dumps(with_event_id(envelope)),
            key=self._key(idempotency_key),
        )

    def publish_batch(
        self,
        events: Iterable[Mapping[str, Any]],
        *,
        stream: str | None,
        source: str | None,
        wait: bool,
        idempotency_key: str | None,
        max_events: int | None,
        max_bytes: int | None,
    ) -> BatchPlan:
        """``POST /api/events/batch``, in as many requests as the limits need (see :mod:`flux.client.batch`)."""
        limits = BatchLimits(max_events or self.limits.max_events, max_bytes or self.limits.max_bytes)
        key = self._key(idempotency_key)
        return BatchPlan(events, limits, key=key, wait=wait, stream=stream, source=source)

    def history(
        self,
        entity: str | None,
        *,
        prefix: str | None,
        namespace: str | None,
        since: Time | None,
        until: Time | None,
        order: str,
        stream: str | None,
        source: str | None,
        page_size: int | None,
    ) -> Call[Page[StoredEvent]]:
        """``GET /api/events``, the first page."""
        params = _query(
            entity=entity,
            prefix=prefix,
            namespace=namespace,
            since=None if since is None else time_param(since),
            until=None if until is None else time_param(until),
            order=order,
            stream=stream,
            source=source,
            limit=page_size,
        )
        return page_call("/api/events", params, StoredEvent.from_json)

    # -- state -----------------------------------------------------------------------------------
    def get(self, entity_id: str, at: Time | None) -> Call[Entity | None]:
        """``GET /api/state/entities/{id}``; 404 is None."""
        params = _query(at=None if at is None else time_param(at))
        return Call("GET", entity_path(entity_id), _or_none(Entity.from_json), params=params, accept=frozenset({404}))

    def entities(
        self, prefix: str | None, namespace: str | None, at: Time | None, page_size: int | None
    ) -> Call[Page[Entity]]:
        """``GET /api/state/entities``, the first page."""
        params = _query(prefix=prefix, namespace=namespace, at=None if at is None else time_param(at), limit=page_size)
        return page_call(ENTITIES, params, Entity.from_json)

    def delete(self, entity_id: str, wait: bool) -> Call[DeleteResult]:
        """``DELETE /api/state/entities/{id}``: repeatable; a retry that finds the entity gone reports it
        deleted (by the earlier try whose answer was lost), with no eventId."""
        return Call(
            "DELETE",
            entity_path(entity_id),
            _one(DeleteResult.from_json),
            params=_query(wait=wait or None),
            gone=lambda: DeleteResult(entity_id, None),
        )

    def delete_many(
        self, prefix: str | None, namespace: str | None, entity_ids: Iterable[str] | None, wait: bool
    ) -> Call[BatchDeleteResult]:
        """``POST /api/state/entities/delete`` by exactly one filter; repeatable (the counts are the last try's)."""
        given = {
            name: value
            for name, value in (
                ("prefix", prefix),
                ("namespace", namespace),
                ("entity_ids", None if entity_ids is None else list(entity_ids)),
            )
            if value is not None
        }
        if len(given) != 1:
            raise ValueError("give exactly one of prefix, namespace or entity_ids")
        return Call(
            "POST",
            f"{ENTITIES}/delete",
            _one(BatchDeleteResult.from_json),
            params=_query(wait=wait or None),
            body=orjson.dumps(given),
        )

    # -- namespaces ------------------------------------------------------------------------------
    def register_namespace(self, name: str) -> Call[NamespaceToken]:
        """``POST /api/namespaces`` (admin): not repeated when the outcome is unknown (a repeat would be 409
        and the token, shown once, lost)."""
        body = orjson.dumps({"name": name})
        return Call("POST", "/api/namespaces", _one(NamespaceToken.from_json), body=body, safety=Safety.ONCE)

    def list_namespaces(self) -> Call[list[Namespace]]:
        """``GET /api/state/namespaces``."""
        return Call("GET", "/api/state/namespaces", _many(Namespace.from_json))

    def get_namespace(self, name: str) -> Call[Namespace | None]:
        """``GET /api/namespaces/{name}``; 404 is None."""
        return Call(
            "GET", f"/api/namespaces/{quote(name, safe='')}", _or_none(Namespace.from_json), accept=frozenset({404})
        )

    def rotate_token(self, name: str) -> Call[NamespaceToken]:
        """``POST /api/namespaces/{name}/token`` (admin): repeatable, the last token given is the valid one."""
        return Call("POST", f"/api/namespaces/{quote(name, safe='')}/token", _one(NamespaceToken.from_json))

    def delete_namespace(self, name: str, purge: bool) -> Call[NamespaceDeleted]:
        """``DELETE /api/namespaces/{name}`` (admin): not repeated when the outcome is unknown."""
        return Call(
            "DELETE",
            f"/api/namespaces/{quote(name, safe='')}",
            _one(NamespaceDeleted.from_json),
            params=_query(purge=purge or None),
            safety=Safety.ONCE,
        )

    # -- replays ---------------------------------------------------------------------------------
    def start_replay(
        self,
        *,
        from_beginning: bool,
        from_timestamp: Time | None,
        from_offsets: Mapping[int, int] | str | None,
        to_timestamp: Time | None,
    ) -> Call[ReplayJob]:
        """``POST /api/admin/replay`` (admin): not repeated when the outcome is unknown (a repeat is 409)."""
        body: dict[str, object] = {}
        if from_beginning:
            body["fromBeginning"] = True
        if from_timestamp is not None:
            body["fromTimestamp"] = time_param(from_timestamp)
        if from_offsets is not None:
            offsets = from_offsets if isinstance(from_offsets, str) else {str(p): o for p, o in from_offsets.items()}
            body["fromOffsets"] = offsets
        if to_timestamp is not None:
            body["toTimestamp"] = time_param(to_timestamp)
        return Call("POST", REPLAYS, _one(ReplayJob.from_json), body=orjson.dumps(body), safety=Safety.ONCE)

    def get_replay(self, job_id: str) -> Call[ReplayJob]:
        """``GET /api/admin/replay/{id}``."""
        return Call("GET", f"{REPLAYS}/{quote(job_id, safe='')}", _one(ReplayJob.from_json))

    def list_replays(self) -> Call[list[ReplayJob]]:
        """``GET /api/admin/replay``: this node's jobs, newest first."""
        return Call("GET", REPLAYS, _many(ReplayJob.from_json))

    def cancel_replay(self, job_id: str) -> Call[ReplayJob]:
        """``DELETE /api/admin/replay/{id}``: repeatable (a finished job is shown as it is)."""
        return Call("DELETE", f"{REPLAYS}/{quote(job_id, safe='')}", _one(ReplayJob.from_json))

    # -- operations ------------------------------------------------------------------------------
    def health(self) -> Call[bool]:
        """``GET /health``, tried once: whether the process answers ``{"status": "ok"}``."""
        return Call("GET", "/health", _healthy, retry=False)

    def ready(self) -> Call[Readiness]:
        """``GET /ready``, tried once; a 503 is a readiness too (not ready)."""
        return Call("GET", "/ready", _one(Readiness.from_json), accept=frozenset({503}), retry=False)
