"""State queries: ``GET /api/state/entities`` and ``GET /api/state/entities/{id}``."""

from __future__ import annotations

from urllib.parse import unquote, urlencode

from fastapi import APIRouter, Query, Request

from api.errors import ApiError
from api.models import AUTH_ERRORS, ERRORS, Entity, ErrorOut
from api.responses import JSON

router = APIRouter(tags=["state"])


def effective_prefix(prefix: str, namespace: str | None) -> str:
    """The id prefix for ``?prefix`` within ``?namespace`` (ids ``namespace/...``)."""
    if namespace is None:
        return prefix
    scope = f"{namespace}/"
    return prefix if prefix.startswith(scope) else scope + prefix


@router.get("/api/state/entities", response_model=list[Entity], responses={**ERRORS, **AUTH_ERRORS})
async def list_entities(
    request: Request,
    prefix: str = Query("", description="Only ids starting with this"),
    namespace: str | None = Query(None, min_length=1, description="Only ids 'namespace/...'; prefix applies within"),
    limit: int | None = Query(
        None, ge=1, description="Page size (default FLUX_LIST_DEFAULT_LIMIT, max FLUX_LIST_MAX_LIMIT)"
    ),
    offset: int = Query(0, ge=0, description="Entities to skip, in id order"),
) -> JSON:
    """Entities in id order; when more follow, a ``Link: <...>; rel="next"`` header points at the next page."""
    settings = request.app.state.settings
    page_size = settings.list_default_limit if limit is None else limit
    if page_size > settings.list_max_limit:
        raise ApiError(422, f"limit must be at most {settings.list_max_limit}")
    caller = request.app.state.guard.reader(request)
    scope = effective_prefix(prefix, namespace) or caller.scope()  # a tenant's unfiltered list is its own
    request.app.state.guard.check_prefix(caller, scope, "read")
    entities, more = request.app.state.reader.scan(scope, offset, page_size)
    headers = {}
    if more:
        params = {k: v for k, v in request.query_params.items() if k not in ("offset", "limit")}
        params.update(offset=str(offset + len(entities)), limit=str(page_size))
        headers["Link"] = f'<{request.url.path}?{urlencode(params)}>; rel="next"'
    return JSON(entities, headers=headers)


@router.get(
    "/api/state/entities/{entity_id:path}",
    response_model=Entity,
    responses={404: {"model": ErrorOut, "description": "Entity not found"}, **AUTH_ERRORS},
)
async def get_entity(request: Request, entity_id: str) -> JSON:
    """One entity; the id may contain '/' (raw or as %2F)."""
    guard = request.app.state.guard
    guard.check_entity(guard.reader(request), unquote(entity_id), "read")
    entity = request.app.state.reader.get(unquote(entity_id))
    if entity is None:
        raise ApiError(404, "Entity not found")
    return JSON(entity)
