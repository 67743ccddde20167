"""Ingestion: ``POST /api/events`` and ``POST /api/events/batch``."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from fastapi import APIRouter, Request

from api.body import read_json
from api.deps import NodeDep, Writer
from api.errors import ApiError
from api.live.read_your_writes import WAIT_QUERY, WAIT_TIMEOUT_QUERY, wait_timeout, wait_until_applied
from api.models import PUBLISH_ERRORS, BatchOut, PublishOut, json_body, ref
from api.responses import JSON
from api.routes.idempotent import IDEMPOTENCY_HEADER, check_key, remember
from flux.model.entity_limits import EntityTooLarge, check_alone
from flux.model.events import InvalidEvent, entity_of, validate_event

router = APIRouter(tags=["events"])

VALIDATE_SLICE = 250


def _now_ms() -> int:
    return int(time.time() * 1000)


@router.post(
    "/api/events",
    response_model=PublishOut,
    responses=PUBLISH_ERRORS,
    openapi_extra=json_body(ref("EventIn")),
)
async def publish_event(
    request: Request,
    node: NodeDep,
    caller: Writer,
    wait: bool = WAIT_QUERY,
    wait_timeout_ms: int | None = WAIT_TIMEOUT_QUERY,
    _key: str | None = IDEMPOTENCY_HEADER,
) -> JSON:
    """Publish one event; answers after the broker acknowledged it (acks=all), or once applied with wait=true."""
    timeout = wait_timeout(node.settings, wait_timeout_ms)
    body = await read_json(request, node.settings.max_event_bytes)
    keyed_request, first = check_key(request, node.idempotency, caller, body)
    if first is not None:
        return first
    if keyed_request is not None:
        (body,) = keyed_request.fill_event_ids([body])
    try:
        envelope = validate_event(body, now_ms=_now_ms(), limits=node.settings.event_limits())
    except InvalidEvent as exc:
        raise ApiError(400, str(exc)) from exc
    try:
        check_alone(envelope, node.settings.entity_limits())
    except EntityTooLarge as exc:
        raise ApiError(413, str(exc)) from exc
    node.guard.check_entity(caller, entity_of(envelope))
    node.guard.charge(caller, 1)
    offsets = await node.publisher.publish(envelope)  # PublishFailed: 503 (api.errors)
    node.metrics.published(1, (envelope["source"],))
    answer = {"eventId": envelope["eventId"], "stream": envelope["stream"]}
    if wait:
        await wait_until_applied(node.applied, node.settings, offsets, [envelope], timeout, answer)
    await remember(node.idempotency, keyed_request, answer)
    return JSON(answer)


def _batch_items(body: Any, max_events: int) -> list[Any]:
    if isinstance(body, dict):
        if "events" not in body:
            raise ApiError(400, 'batch must be {"events": [...]} or a JSON array of events')
        body = body["events"]
    if not isinstance(body, list):
        raise ApiError(400, "events must be an array")
    if not body:
        raise ApiError(400, "batch is empty")
    if len(body) > max_events:
        raise ApiError(413, f"batch has {len(body)} events; the limit is {max_events}")
    return body


@router.post(
    "/api/events/batch",
    response_model=BatchOut,
    responses=PUBLISH_ERRORS,
    openapi_extra=json_body({"oneOf": [ref("BatchIn"), {"type": "array", "items": ref("EventIn"), "minItems": 1}]}),
)
async def publish_batch(
    request: Request,
    node: NodeDep,
    caller: Writer,
    wait: bool = WAIT_QUERY,
    wait_timeout_ms: int | None = WAIT_TIMEOUT_QUERY,
    _key: str | None = IDEMPOTENCY_HEADER,
) -> JSON:
    """Publish many events; the valid ones are written in one Kafka transaction, invalid ones fail one by one."""
    settings = node.settings
    timeout = wait_timeout(settings, wait_timeout_ms)
    guard = node.guard
    body = await read_json(request, settings.max_batch_bytes)
    keyed_request, first = check_key(request, node.idempotency, caller, body)
    if first is not None:
        return first
    items = _batch_items(body, settings.max_batch_events)
    if keyed_request is not None:
        items = keyed_request.fill_event_ids(items)
    now = _now_ms()
    limits = settings.event_limits()
    entity_limits = settings.entity_limits()
    results: list[dict[str, Any]] = []
    valid: list[dict[str, Any]] = []
    forbidden = 0
    for index, item in enumerate(items):
        if index and index % VALIDATE_SLICE == 0:
            await asyncio.sleep(0)  # let other requests in between slices of a large batch
        try:
            envelope = validate_event(item, now_ms=now, limits=limits)
            check_alone(envelope, entity_limits)
        except (InvalidEvent, EntityTooLarge) as exc:
            stream = item.get("stream") if isinstance(item, dict) and isinstance(item.get("stream"), str) else None
            results.append({"eventId": None, "stream": stream, "error": f"events[{index}]: {exc}"})
            continue
        refused = guard.entity_error(caller, entity_of(envelope))
        if refused is not None:
            forbidden += 1
            results.append({"eventId": None, "stream": envelope["stream"], "error": f"events[{index}]: {refused}"})
            continue
        valid.append(envelope)
        results.append({"eventId": envelope["eventId"], "stream": envelope["stream"], "error": None})
    failed = len(items) - len(valid)
    if not valid:
        status = 403 if forbidden == failed else 400
        message = "no valid events in the batch"
        if status == 403:
            message = "no event of the batch may be written with this token"
        raise ApiError(status, message, {"successful": 0, "failed": failed, "results": results})
    guard.charge(caller, len(valid))
    offsets = await node.publisher.publish_batch(valid)  # PublishFailed: 503 (api.errors)
    node.metrics.published(len(valid), {e["source"] for e in valid})
    answer = {"successful": len(valid), "failed": failed, "results": results}
    if wait:
        await wait_until_applied(node.applied, settings, offsets, valid, timeout, answer)
    await remember(node.idempotency, keyed_request, answer, batch=True)
    return JSON(answer)
