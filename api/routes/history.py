"""History: ``GET /api/events``, the stored events of an entity or of every entity under a prefix."""

from __future__ import annotations

import time
from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request

from api.deps import NodeDep, Reader
from api.models import AUTH_ERRORS, ERRORS, StoredEvent
from api.params import QueryTime, effective_prefix, history_query, query_time
from api.responses import JSON
from flux.model.events import MAX_TIMESTAMP_MS
from flux.model.history import encode_cursor

router = APIRouter(tags=["history"])

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
DEFAULT_WINDOW_MS = 24 * 3600 * 1000
TIME_HELP = "RFC 3339 (2026-02-23T10:30:00Z) or Unix epoch ms"


@router.get("/api/events", response_model=list[StoredEvent], responses={**ERRORS, **AUTH_ERRORS})
async def list_events(
    request: Request,
    node: NodeDep,
    caller: Reader,
    entity: str | None = Query(None, min_length=1, description="One entity's events"),
    prefix: str | None = Query(None, min_length=1, description="Events of every entity whose id starts with this"),
    namespace: str | None = Query(None, min_length=1, pattern=r"^[^/]+$", description="Events of 'namespace/...'"),
    since: Annotated[
        QueryTime, Query(description=f"Events at or after this time ({TIME_HELP}); default 24 h ago")
    ] = None,
    until: Annotated[
        QueryTime, Query(description=f"Events at or before this time ({TIME_HELP}); default no bound")
    ] = None,
    limit: int = Query(DEFAULT_LIMIT, ge=1, le=MAX_LIMIT, description="Page size"),
    order: str = Query("asc", pattern="^(asc|desc)$", description="By event timestamp (then eventId)"),
    stream: str | None = Query(None, description="Only events of this stream"),
    source: str | None = Query(None, description="Only events from this source"),
    cursor: str | None = Query(None, include_in_schema=False),  # opaque: clients follow the Link header
) -> JSON:
    """Stored events, oldest first by default: one entity's in time order; for ``prefix`` and
    ``namespace`` (which combine, as in ``GET /api/state/entities``), by entity id then time.

    When more match, ``Link: <...>; rel="next"`` points at the next page; following it never skips
    or repeats an event.
    """
    guard = node.guard
    scope = effective_prefix(prefix or "", namespace)
    if entity is not None:
        guard.check_entity(caller, entity, "read")
        if not entity.startswith(scope):
            return JSON([])  # the filters exclude each other
    else:
        scope = scope or caller.scope()  # a tenant's unfiltered history is its own (private reads)
        guard.check_prefix(caller, scope, "read")
    low = query_time(since, "since", max(0, int(time.time() * 1000) - DEFAULT_WINDOW_MS))
    high = query_time(until, "until", MAX_TIMESTAMP_MS)
    if low > high:
        return JSON([])  # an empty window
    query = history_query(
        entity=entity,
        prefix=scope,
        since=low,
        until=high,
        order=order,
        limit=limit,
        cursor=cursor,
        stream=stream,
        source=source,
    )
    if entity is not None:
        await node.cluster.settle(entity)  # served here, else forwarded (api.cluster.forward)
        events, last = node.history.events(query)
    else:
        events, last = await node.cluster.history(query, request.headers.get("authorization"))
    headers = {}
    if last is not None:
        params = {k: v for k, v in request.query_params.items() if k != "cursor"}
        params.update(since=str(low), cursor=encode_cursor(last))  # pin the window: "24 h ago" moves
        headers["Link"] = f'<{request.url.path}?{urlencode(params)}>; rel="next"'
    return JSON(events, headers=headers)
