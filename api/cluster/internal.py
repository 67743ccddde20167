"""The endpoints nodes of one app ask each other for their share of a cross-partition read.

Not part of the public API (absent from the OpenAPI document), but held to the same rules: the
caller's own ``Authorization`` travels with the request and is checked here as on the node it
came to, so these endpoints read nothing the caller could not read through the public ones, and
their parameters are checked as the public ones are (times out of range are 400). With
``FLUX_CLUSTER_SECRET`` set, they answer only calls that show it (:mod:`api.cluster.node_calls`). Each
names the partitions it wants; a node that does not serve one of them (any more) answers 503,
and the asking node answers 503 with ``Retry-After`` in turn (see :mod:`api.cluster.gather`).

Each call's work is bounded: pages of at most :data:`MAX_PAGE` entities or events, at most
FLUX_LIST_AT_MAX_EVENTS history events folded for entities as they were at a time, and at most
:data:`api.cluster.node_calls.MAX_CALL_ITEMS` ids or namespaces in a body (413 beyond; the
gathering node splits longer lists).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query, Request

from api.auth import Caller
from api.body import read_json
from api.cluster.node_calls import MAX_CALL_ITEMS
from api.deps import Node, NodeDep, Reader
from api.errors import ApiError
from api.params import history_query, query_time
from api.responses import JSON
from flux.model.state import StoredEntity


async def node_calls_only(request: Request, node: NodeDep) -> None:
    """With FLUX_CLUSTER_SECRET set, only other nodes (showing it) may call these endpoints: else 403."""
    if node.calls.secured and not node.guard.node_call(request):
        raise ApiError(403, "the internal endpoints answer the other nodes of this app only (FLUX_CLUSTER_SECRET)")


router = APIRouter(prefix="/api/internal", include_in_schema=False, dependencies=[Depends(node_calls_only)])

MAX_PAGE = 10_000
MAX_BODY_BYTES = 16 * 1024 * 1024  # the items are capped (MAX_CALL_ITEMS); this only stops absurd bodies early


def _partitions(node: Node, given: str) -> list[int]:
    try:
        partitions = sorted({int(p) for p in given.split(",") if p.strip()})
    except ValueError as exc:
        raise ApiError(400, "partitions must be a comma-separated list of partition numbers") from exc
    if any(not 0 <= p < node.settings.partitions for p in partitions):
        raise ApiError(400, f"partitions must lie in 0..{node.settings.partitions - 1}")
    return partitions


def _row(stored: StoredEntity) -> list[Any]:
    return [stored.entity, stored.last_timestamp, stored.applied]


def _check_prefix(node: Node, caller: Caller, prefix: str) -> None:
    node.guard.check_prefix(caller, prefix, "read")


@router.get("/entities")
async def entities(
    node: NodeDep,
    caller: Reader,
    partitions: str,
    prefix: str = "",
    after: str | None = None,
    at: int | None = None,
    limit: int = Query(1000, ge=1, le=MAX_PAGE),
    budget: int | None = Query(None, ge=1),
) -> JSON:
    """This node's entities of ``partitions`` with the prefix, after ``after``, in id order; with ``at``,
    as they were then, folding at most ``budget`` (at most FLUX_LIST_AT_MAX_EVENTS) history events,
    and ``scanned``: how many it folded."""
    _check_prefix(node, caller, prefix)
    wanted = _partitions(node, partitions)
    if at is None:
        found = node.reader.iter_prefix(prefix, wanted, after)
        items = [_row(stored) for _, stored in zip(range(limit), found, strict=False)]
        return JSON({"items": items, "frontier": items[-1][0]["id"] if len(items) == limit else None})
    most = node.settings.list_at_max_events
    page = await node.history.page_at(prefix, query_time(at, "at", 0), limit, min(most, budget or most), wanted, after)
    items = [[entity, 0, -1] for _, entity in page.items]
    return JSON({"items": items, "frontier": page.frontier, "scanned": page.scanned})


def _items(body: Any, field: str, what: str) -> list[str]:
    """``body[field]``, a list of at most MAX_CALL_ITEMS strings (else 400, or 413 for a longer one)."""
    given = body.get(field) if isinstance(body, dict) else None
    if not isinstance(given, list) or not all(isinstance(item, str) for item in given):
        raise ApiError(400, f'body must be {{"{field}": [{what}]}}')
    if len(given) > MAX_CALL_ITEMS:
        raise ApiError(413, f"{field} has {len(given)} items; one call carries at most {MAX_CALL_ITEMS}")
    return given


@router.post("/lookup")
async def lookup(request: Request, node: NodeDep, caller: Reader) -> JSON:
    """The existing entities among ``{"ids": [...]}`` (all of partitions served here)."""
    guard = node.guard
    ids = _items(await read_json(request, MAX_BODY_BYTES), "ids", "entity ids")
    rows = []
    for entity_id in ids:
        guard.check_entity(caller, entity_id, "read")
        stored = node.reader.lookup(entity_id)
        if stored is not None:
            rows.append(_row(stored))
    return JSON({"items": rows})


@router.post("/namespace-counts")
async def namespace_counts(request: Request, node: NodeDep, caller: Reader) -> JSON:
    """Existing entities per namespace in the partitions of ``{"namespaces": [...], "partitions": [...]}``."""
    body = await read_json(request, MAX_BODY_BYTES)
    given = body.get("partitions") if isinstance(body, dict) else None
    if not isinstance(given, list):
        raise ApiError(400, 'body must be {"namespaces": [names], "partitions": [numbers]}')
    names = _items(body, "namespaces", "names")
    wanted = _partitions(node, ",".join(str(p) for p in given))
    counts = {}
    for name in names:
        _check_prefix(node, caller, f"{name}/")
        counts[name] = node.reader.count_namespace(name, wanted)
    return JSON(counts)


@router.get("/history")
async def history(
    node: NodeDep,
    caller: Reader,
    partitions: str,
    since: int,
    until: int,
    prefix: str = "",
    order: str = Query("asc", pattern="^(asc|desc)$"),
    limit: int = Query(100, ge=1, le=MAX_PAGE),
    stream: str | None = None,
    source: str | None = None,
    cursor: str | None = None,
) -> JSON:
    """A page of the history of ``partitions`` under the prefix: ``[key hex, event]`` pairs and the frontier."""
    _check_prefix(node, caller, prefix)
    query = history_query(
        entity=None,
        prefix=prefix,
        since=query_time(since, "since", 0),
        until=query_time(until, "until", 0),
        order=order,
        limit=limit,
        cursor=cursor,
        stream=stream,
        source=source,
    )
    items, frontier = node.history.page(query, _partitions(node, partitions))
    return JSON({"items": [[key.hex(), event] for key, event in items], "frontier": frontier and frontier.hex()})
