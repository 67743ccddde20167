"""Deletion: ``DELETE /api/state/entities/{id}`` and ``POST /api/state/entities/delete``.

A deletion is an event like any other: a tombstone (``"op": "delete"``) published to the events
topic and folded by the reducer, so it survives restarts and replays. Its timestamp is now, or
just after the entity's newest event if that is in the future, so that it removes every
property; later events create the entity anew, older (late) ones do not resurrect it.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from fastapi import APIRouter, Request

from api.body import read_json
from api.deps import Node, NodeDep, Writer
from api.errors import ApiError
from api.live.read_your_writes import WAIT_QUERY, WAIT_TIMEOUT_QUERY, wait_timeout, wait_until_applied
from api.models import WRITE_ERRORS, BatchDeleteOut, DeleteOut, ErrorOut, json_body, ref
from api.responses import JSON
from flux.model.events import OP_DELETE, Envelope
from flux.model.ids import new_event_id
from flux.model.state import StoredEntity

router = APIRouter(tags=["deletion"])

TOMBSTONE_STREAM = "flux"
TOMBSTONE_SOURCE = "flux-api"
SCAN_SLICE = 1000
FILTERS = ("prefix", "namespace", "entity_ids")


def tombstone(stored: StoredEntity) -> Envelope:
    """The delete event for an existing entity, newer than everything it holds."""
    timestamp = max(int(time.time() * 1000), stored.last_timestamp + 1)
    return {
        "eventId": new_event_id(timestamp),
        "stream": TOMBSTONE_STREAM,
        "source": TOMBSTONE_SOURCE,
        "timestamp": timestamp,
        "op": OP_DELETE,
        "payload": {"entity_id": stored.entity["id"]},
    }


@router.delete(
    "/api/state/entities/{entity_id:path}",
    response_model=DeleteOut,
    responses={404: {"model": ErrorOut, "description": "Entity not found"}, **WRITE_ERRORS},
)
async def delete_entity(
    request: Request,
    node: NodeDep,
    caller: Writer,
    entity_id: str,
    wait: bool = WAIT_QUERY,
    wait_timeout_ms: int | None = WAIT_TIMEOUT_QUERY,
) -> JSON:
    """Delete one entity (the id may contain '/'): publishes a tombstone event; 404 if it does not exist."""
    timeout = wait_timeout(node.settings, wait_timeout_ms)
    node.guard.check_entity(caller, entity_id, "delete")  # percent-decoded once, as for reads
    stored = (await node.cluster.lookup([entity_id], request.headers.get("authorization"))).get(entity_id)
    if stored is None:
        raise ApiError(404, "Entity not found")
    node.guard.charge(caller, 1)
    event = tombstone(stored)
    offsets = await node.publisher.publish(event)  # PublishFailed: 503 (api.errors)
    answer = {"entity_id": stored.entity["id"], "eventId": event["eventId"]}
    if wait:
        await wait_until_applied(node.applied, node.settings, offsets, [event], timeout, answer)
    return JSON(answer)


def _one_filter(body: Any) -> tuple[str, Any]:
    if not isinstance(body, dict):
        raise ApiError(400, 'body must be a JSON object with one of "prefix", "namespace" or "entity_ids"')
    given = [name for name in FILTERS if body.get(name) is not None]
    if len(given) != 1:
        found = ", ".join(given) if given else "none"
        raise ApiError(400, f'give exactly one of "prefix", "namespace" or "entity_ids" (got {found})')
    name = given[0]
    value = body[name]
    if name == "entity_ids":
        if not isinstance(value, list) or not value:
            raise ApiError(400, "entity_ids must be a non-empty array of entity ids")
        for index, item in enumerate(value):
            if not isinstance(item, str) or not item:
                raise ApiError(400, f"entity_ids[{index}] must be a non-empty string")
    elif not isinstance(value, str) or not value:
        raise ApiError(400, f"{name} must be a non-empty string")
    elif name == "namespace" and "/" in value:
        raise ApiError(400, "namespace must not contain '/'")
    return name, value


async def _matching(request: Request, node: Node, prefix: str, limit: int) -> list[StoredEntity]:
    found: list[StoredEntity] = []
    async for stored in node.cluster.entities(prefix, request.headers.get("authorization"), limit + 1):
        found.append(stored)
        if len(found) > limit:
            raise ApiError(
                400,
                f"the filter matches more than {limit} entities (FLUX_DELETE_BATCH_LIMIT); nothing was deleted. "
                "Narrow the filter or delete in parts.",
            )
        if len(found) % SCAN_SLICE == 0:
            await asyncio.sleep(0)
    return found


@router.post(
    "/api/state/entities/delete",
    response_model=BatchDeleteOut,
    responses=WRITE_ERRORS,
    openapi_extra=json_body(ref("BatchDeleteIn")),
)
async def delete_entities(
    request: Request,
    node: NodeDep,
    caller: Writer,
    wait: bool = WAIT_QUERY,
    wait_timeout_ms: int | None = WAIT_TIMEOUT_QUERY,
) -> JSON:
    """Delete by exactly one filter: ``prefix``, ``namespace`` or ``entity_ids``; all tombstones in one transaction."""
    settings = node.settings
    timeout = wait_timeout(settings, wait_timeout_ms)
    guard = node.guard
    name, value = _one_filter(await read_json(request, settings.max_batch_bytes))
    limit = settings.delete_batch_limit
    errors: list[dict[str, str]] = []
    if name == "entity_ids":
        ids = list(dict.fromkeys(value))
        if len(ids) > limit:
            raise ApiError(400, f"entity_ids has {len(ids)} ids; the limit is {limit} (FLUX_DELETE_BATCH_LIMIT)")
        allowed = []
        for entity_id in ids:
            refused = guard.entity_error(caller, entity_id, "delete")
            if refused is None:
                allowed.append(entity_id)
            else:
                errors.append({"entity_id": entity_id, "error": refused.message})
        found = await node.cluster.lookup(allowed, request.headers.get("authorization"))
        targets = [found[i] for i in allowed if i in found]
        errors.extend({"entity_id": i, "error": "Entity not found"} for i in allowed if i not in found)
    else:
        prefix = value if name == "prefix" else f"{value}/"
        guard.check_prefix(caller, prefix, "delete")
        targets = await _matching(request, node, prefix, limit)
    guard.charge(caller, len(targets))
    events = [tombstone(stored) for stored in targets]
    offsets = {}
    if events:
        offsets = await node.publisher.publish_batch(events)  # PublishFailed: 503 (api.errors)
    answer = {"deleted": len(events), "failed": len(errors), "errors": errors}
    if wait and events:
        await wait_until_applied(node.applied, settings, offsets, events, timeout, answer)
    return JSON(answer)
