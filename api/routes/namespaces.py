"""Namespaces: register (admin), list, show, rotate a token (admin), delete with or without purge (admin)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request

from api.auth import Caller
from api.body import read_json
from api.deps import Admin, Node, NodeDep, Reader
from api.errors import ApiError
from api.models import (
    AUTH_ERRORS,
    ERRORS,
    ErrorOut,
    NamespaceCreated,
    NamespaceDeleted,
    NamespaceOut,
    json_body,
    ref,
)
from api.responses import JSON
from api.routes.delete import tombstone
from flux.kafka.namespace_log import NamespaceTaken, UnknownNamespace
from flux.model.namespaces import NAME_RULE, InvalidName, Namespace, check_name
from flux.model.state import StoredEntity

router = APIRouter(tags=["namespaces"])

NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": ErrorOut, "description": "No namespace of that name"}}
MAX_NAME_BODY_BYTES = 4096
PURGE_CHUNK = 1000


async def _described(request: Request, node: Node, namespaces: list[Namespace]) -> list[dict[str, Any]]:
    """The namespaces' public views with their entity counts, gathered over the cluster."""
    auth = request.headers.get("authorization")
    counts = await node.cluster.count_namespaces([ns.name for ns in namespaces], auth)
    return [{**ns.public(), "entityCount": counts[ns.name]} for ns in namespaces]


def _visible(caller: Caller, namespace: Namespace) -> bool:
    return caller.namespace is None or caller.namespace.name == namespace.name


def _holder(node: Node, name: str) -> Namespace:
    namespace = node.namespaces.registry.holder(name)
    if namespace is None:
        raise ApiError(404, f"no namespace named {name!r}")
    return namespace


@router.post(
    "/api/namespaces",
    status_code=201,
    response_model=NamespaceCreated,
    responses={
        409: {"model": ErrorOut, "description": "The name is taken, or entities 'name/...' exist already"},
        **AUTH_ERRORS,
        **ERRORS,
    },
    openapi_extra=json_body(ref("NamespaceIn")),
)
async def register_namespace(request: Request, node: NodeDep, _: Admin) -> JSON:
    """Register a namespace (admin token); the answer carries its token, shown this once only.

    A new namespace starts empty: a name whose entities ``name/...`` exist (left by an earlier
    namespace deleted without purge, or written by the admin) is refused (409) until they are
    deleted, e.g. with ``DELETE /api/namespaces/{name}?purge=true``; else its new holder would
    inherit them.
    """
    body = await read_json(request, MAX_NAME_BODY_BYTES)
    if not isinstance(body, dict) or "name" not in body:
        raise ApiError(400, f'body must be {{"name": "..."}}; a name is {NAME_RULE}')
    try:
        name = check_name(body["name"])
    except InvalidName as exc:
        raise ApiError(400, str(exc)) from exc
    if node.namespaces.registry.holder(name) is None:
        auth = request.headers.get("authorization")
        left = (await node.cluster.count_namespaces([name], auth))[name]
        if left:
            raise ApiError(
                409,
                f"{left} entities '{name}/...' exist (left by an earlier namespace {name!r} deleted without purge, "
                f"or written by the admin); a new namespace starts empty: delete them first with "
                f"DELETE /api/namespaces/{name}?purge=true",
            )
    try:
        namespace, token = await node.namespaces.register(name)
    except NamespaceTaken as exc:
        raise ApiError(409, f"namespace {name!r} is taken") from exc
    return JSON({"namespaceId": namespace.namespace_id, "name": namespace.name, "token": token}, status_code=201)


@router.get("/api/state/namespaces", response_model=list[NamespaceOut], responses=AUTH_ERRORS)
async def list_namespaces(request: Request, node: NodeDep, caller: Reader) -> JSON:
    """Every namespace (name, id, creation time, entity count; never tokens), by name."""
    found = [ns for ns in node.namespaces.registry.all() if _visible(caller, ns)]
    return JSON(await _described(request, node, found))


@router.get("/api/namespaces/{name}", response_model=NamespaceOut, responses={**NOT_FOUND, **AUTH_ERRORS})
async def show_namespace(request: Request, node: NodeDep, caller: Reader, name: str) -> JSON:
    """One namespace with its true entity count."""
    namespace = _holder(node, name)
    if not _visible(caller, namespace):
        raise ApiError(403, f"the token of namespace {caller.scope()[:-1]!r} cannot read namespace {name!r}")
    return JSON((await _described(request, node, [namespace]))[0])


@router.post(
    "/api/namespaces/{name}/token",
    response_model=NamespaceCreated,
    responses={**NOT_FOUND, **AUTH_ERRORS, 503: ERRORS[503]},
)
async def rotate_token(node: NodeDep, _: Admin, name: str) -> JSON:
    """Give the namespace a new token (admin); the old one stops working at once."""
    try:
        namespace, token = await node.namespaces.rotate_token(name)
    except UnknownNamespace as exc:
        raise ApiError(404, f"no namespace named {name!r}") from exc
    return JSON({"namespaceId": namespace.namespace_id, "name": namespace.name, "token": token})


async def _purge(request: Request, node: Node, name: str) -> int:
    """Publish tombstones for every entity of the namespace, a transaction per chunk."""
    publisher = node.publisher
    deleted = 0
    chunk: list[StoredEntity] = []
    async for stored in node.cluster.entities(f"{name}/", request.headers.get("authorization")):
        chunk.append(stored)
        if len(chunk) == PURGE_CHUNK:
            await publisher.publish_batch([tombstone(s) for s in chunk])
            deleted += len(chunk)
            chunk = []
    if chunk:
        await publisher.publish_batch([tombstone(s) for s in chunk])
        deleted += len(chunk)
    return deleted


@router.delete(
    "/api/namespaces/{name}",
    response_model=NamespaceDeleted,
    responses={**NOT_FOUND, **AUTH_ERRORS, 503: ERRORS[503]},
)
async def delete_namespace(
    request: Request,
    node: NodeDep,
    _: Admin,
    name: str,
    purge: bool = Query(False, description="Also delete every entity of the namespace"),
) -> JSON:
    """Remove a namespace (admin): its token stops working; with purge=true its entities are deleted too.

    A purge first locks the tenant out (a new token nobody sees), then deletes the entities, then
    the namespace: if it fails part-way (503), the namespace is still there to retry with. A purge
    of a name no namespace holds deletes the entities ``name/...`` left behind (namespaceId null),
    so that the name can be registered again; 404 if there are none either.
    """
    if purge and node.namespaces.registry.holder(name) is None:
        deleted = await _purge(request, node, name)
        if not deleted:
            raise ApiError(404, f"no namespace named {name!r}, and no entities '{name}/...' to purge")
        return JSON({"namespaceId": None, "name": name, "purged": True, "entitiesDeleted": deleted})
    try:
        deleted = 0
        if purge:
            await node.namespaces.rotate_token(name)
            deleted = await _purge(request, node, name)
        namespace = await node.namespaces.delete(name)
    except UnknownNamespace as exc:
        raise ApiError(404, f"no namespace named {name!r}") from exc
    return JSON({"namespaceId": namespace.namespace_id, "name": name, "purged": purge, "entitiesDeleted": deleted})
