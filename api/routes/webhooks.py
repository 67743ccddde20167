"""Webhooks: register, list, show, delete, resume, and their recent deliveries (docs/webhooks.md).

The admin may register a webhook for any pattern, a namespace's token for patterns inside its
namespace (``ns/...``); each sees and manages the webhooks it may register. The routes read and
write the webhooks topic (:class:`flux.kafka.webhook_log.WebhookLog`), so any process of any node
serves them; the deliveries run in the reducer processes (:mod:`api.webhooks.delivery`).
"""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request

from api.auth import Caller
from api.body import read_json
from api.deps import Node, NodeDep, Writer
from api.errors import ApiError
from api.models import (
    AUTH_ERRORS,
    ERRORS,
    DeliveriesOut,
    ErrorOut,
    WebhookCreated,
    WebhookOut,
    json_body,
    ref,
)
from api.responses import JSON
from api.webhooks.targets import TargetRefused, check_target
from flux.kafka.webhook_log import UnknownWebhook, WebhookLog
from flux.model.reducer import rfc3339_ms
from flux.model.webhooks import (
    InvalidWebhook,
    Pause,
    Webhook,
    check_pattern,
    check_secret,
    new_secret,
    new_webhook_id,
    orphaned,
)

router = APIRouter(tags=["webhooks"])

MAX_BODY_BYTES = 8192
FIELDS = {"url", "entity_id", "secret"}
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": ErrorOut, "description": "No webhook with that id"}}
UNAVAILABLE: dict[int | str, dict[str, Any]] = {503: ERRORS[503]}


def webhook_log(request: Request) -> WebhookLog:
    """The webhooks topic's follower of this process (``app.state.webhooks``, set by the composition root)."""
    hooks = getattr(request.app.state, "webhooks", None)
    if hooks is None:
        raise ApiError(503, "webhooks are not served by this process")
    return hooks  # type: ignore[no-any-return]


Hooks = Annotated[WebhookLog, Depends(webhook_log)]


def _visible(caller: Caller, hook: Webhook) -> bool:
    return caller.admin or (caller.namespace is not None and caller.namespace.namespace_id == hook.namespace_id)


def _hook(hooks: WebhookLog, caller: Caller, webhook_id: str) -> Webhook:
    hook = hooks.registry.get(webhook_id)
    if hook is None:
        raise ApiError(404, f"no webhook with id {webhook_id!r}")
    if not _visible(caller, hook):
        raise ApiError(403, f"webhook {webhook_id!r} belongs to another namespace")
    return hook


def _time(ms: int | None) -> str | None:
    return None if ms is None else rfc3339_ms(ms)


def describe(hooks: WebhookLog, hook: Webhook, node: Node) -> dict[str, Any]:
    """A webhook's public view (see :class:`api.models.WebhookOut`)."""
    registry = hooks.registry
    pause = registry.pauses.get(hook.webhook_id)
    holder = None if hook.namespace is None else node.namespaces.registry.holder(hook.namespace)
    why = orphaned(hook, None if holder is None else holder.namespace_id)
    if why is not None:  # not delivered any more: shown as paused for good (delete it)
        pause = Pause(pause.at if pause is not None else hook.created_at, why)
    reports = list(registry.reports.get(hook.webhook_id, {}).values())
    failing = [r for r in reports if r.failing_since is not None]
    successes = [r.last_success for r in reports if r.last_success is not None]
    last_error = max(failing, key=lambda r: r.at).last_error if failing else None
    return {
        "id": hook.webhook_id,
        "url": hook.url,
        "entity_id": hook.entity_id,
        "createdAt": rfc3339_ms(hook.created_at),
        "namespace": hook.namespace,
        "status": "paused" if why is not None else registry.status(hook.webhook_id),
        "paused": None if pause is None else {"at": rfc3339_ms(pause.at), "reason": pause.reason},
        "failingSince": _time(min((r.failing_since for r in failing if r.failing_since is not None), default=None)),
        "lastError": last_error,
        "lastSuccess": _time(max(successes, default=None)),
    }


async def _parse(request: Request, node: NodeDep, caller: Caller) -> Webhook:
    body = await read_json(request, MAX_BODY_BYTES)
    if not isinstance(body, dict) or "url" not in body or "entity_id" not in body:
        raise ApiError(400, 'body must be {"url": "https://...", "entity_id": "pattern", "secret"?: "..."}')
    unknown = sorted(set(body) - FIELDS)
    if unknown:
        raise ApiError(400, f"unknown fields {unknown}: a webhook has url, entity_id and secret")
    try:
        pattern = check_pattern(body["entity_id"])
        secret = new_secret() if body.get("secret") is None else check_secret(body["secret"])
    except InvalidWebhook as exc:
        raise ApiError(400, str(exc)) from exc
    if pattern.endswith("*"):
        node.guard.check_prefix(caller, pattern[:-1], "watch")
    else:
        node.guard.check_entity(caller, pattern, "watch")
    try:
        await check_target(body["url"], node.settings.webhook_allow_private)
    except TargetRefused as exc:
        raise ApiError(400, str(exc)) from exc
    namespace = caller.namespace
    return Webhook(
        webhook_id=new_webhook_id(),
        url=body["url"],
        entity_id=pattern,
        secret=secret,
        created_at=int(time.time() * 1000),
        namespace=None if namespace is None else namespace.name,
        namespace_id=None if namespace is None else namespace.namespace_id,
    )


@router.post(
    "/api/webhooks",
    status_code=201,
    response_model=WebhookCreated,
    responses={**AUTH_ERRORS, **ERRORS},
    openapi_extra=json_body(ref("WebhookIn")),
)
async def register_webhook(request: Request, node: NodeDep, hooks: Hooks, caller: Writer) -> JSON:
    """Register a webhook: every change of the entities ``entity_id`` matches is POSTed to ``url``, signed.

    The admin token may register any pattern, a namespace's token patterns inside its namespace
    (``ns/...``). The answer carries the signing secret (generated when none is given), shown this
    once. Changes written from now on are delivered (see docs/webhooks.md).
    """
    hook = await _parse(request, node, caller)
    await hooks.register(hook)
    created = {"id": hook.webhook_id, "url": hook.url, "entity_id": hook.entity_id, "secret": hook.secret}
    return JSON(created, status_code=201, headers={"Location": f"/api/webhooks/{hook.webhook_id}"})


@router.get("/api/webhooks", response_model=list[WebhookOut], responses=AUTH_ERRORS)
async def list_webhooks(node: NodeDep, hooks: Hooks, caller: Writer) -> JSON:
    """The webhooks the caller may manage (all for the admin, its own for a namespace), oldest first."""
    return JSON([describe(hooks, hook, node) for hook in hooks.registry.all() if _visible(caller, hook)])


@router.get("/api/webhooks/{webhook_id}", response_model=WebhookOut, responses={**NOT_FOUND, **AUTH_ERRORS})
async def show_webhook(node: NodeDep, hooks: Hooks, caller: Writer, webhook_id: str) -> JSON:
    """One webhook with its status: active, failing (retrying) or paused (and why)."""
    return JSON(describe(hooks, _hook(hooks, caller, webhook_id), node))


@router.delete(
    "/api/webhooks/{webhook_id}", response_model=WebhookOut, responses={**NOT_FOUND, **AUTH_ERRORS, **UNAVAILABLE}
)
async def delete_webhook(node: NodeDep, hooks: Hooks, caller: Writer, webhook_id: str) -> JSON:
    """Remove a webhook: deliveries stop (one in flight may still arrive). Answers what was removed."""
    view = describe(hooks, _hook(hooks, caller, webhook_id), node)
    try:
        await hooks.delete(webhook_id)
    except UnknownWebhook as exc:
        raise ApiError(404, f"no webhook with id {webhook_id!r}") from exc
    return JSON(view)


@router.post(
    "/api/webhooks/{webhook_id}/resume",
    response_model=WebhookOut,
    responses={**NOT_FOUND, **AUTH_ERRORS, **UNAVAILABLE},
)
async def resume_webhook(node: NodeDep, hooks: Hooks, caller: Writer, webhook_id: str) -> JSON:
    """Resume a paused webhook: deliveries go on from where they stopped (nothing to do if it is not paused)."""
    _hook(hooks, caller, webhook_id)
    try:
        hook = await hooks.resume(webhook_id)
    except UnknownWebhook as exc:
        raise ApiError(404, f"no webhook with id {webhook_id!r}") from exc
    return JSON(describe(hooks, hook, node))


@router.get(
    "/api/webhooks/{webhook_id}/deliveries", response_model=DeliveriesOut, responses={**NOT_FOUND, **AUTH_ERRORS}
)
async def list_deliveries(
    hooks: Hooks,
    caller: Writer,
    webhook_id: str,
    limit: int = Query(100, ge=1, le=1000, description="Most attempts to list"),
) -> JSON:
    """The webhook's recent delivery attempts on every node, newest first: when, the receiver's status, the
    error. Each node keeps its last FLUX_WEBHOOK_DELIVERIES_KEPT; reports are at most a second old."""
    hook = _hook(hooks, caller, webhook_id)
    attempts = hooks.registry.attempts(hook.webhook_id)[:limit]
    deliveries = [
        {
            "delivery": a.delivery,
            "time": rfc3339_ms(a.at),
            "attempt": a.attempt,
            "changes": a.changes,
            "status": a.status,
            "error": a.error,
            "durationMs": a.duration_ms,
            "node": node,
        }
        for node, a in attempts
    ]
    return JSON({"id": hook.webhook_id, "status": hooks.registry.status(hook.webhook_id), "deliveries": deliveries})
