"""State queries: ``GET /api/state/entities`` and ``GET /api/state/entities/{id}``."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request

from api.deps import NodeDep, Reader
from api.errors import ApiError
from api.models import AUTH_ERRORS, ERRORS, Entity, ErrorOut
from api.params import QueryTime, effective_prefix, query_time
from api.responses import JSON

router = APIRouter(tags=["state"])

AT_HELP = "The state as it was at this time (RFC 3339 or Unix epoch ms): the fold of the events up to it."
AT_LIST_HELP = (
    " Costs a fold of each matching entity's history: a page folds about FLUX_LIST_AT_MAX_EVENTS events at most"
    " on each node, then ends early (fewer entities, or none) with a Link to go on."
)


@router.get("/api/state/entities", response_model=list[Entity], responses={**ERRORS, **AUTH_ERRORS})
async def list_entities(
    request: Request,
    node: NodeDep,
    caller: Reader,
    prefix: str = Query("", description="Only ids starting with this"),
    namespace: str | None = Query(None, min_length=1, description="Only ids 'namespace/...'; prefix applies within"),
    limit: int | None = Query(
        None, ge=1, description="Page size (default FLUX_LIST_DEFAULT_LIMIT, max FLUX_LIST_MAX_LIMIT)"
    ),
    offset: int = Query(
        0, ge=0, description="Entities to skip, in id order (at most FLUX_LIST_MAX_OFFSET; deeper: `after`)"
    ),
    after: str | None = Query(
        None, min_length=1, description="Only ids after this one, in id order (the cursor of the next page's link)"
    ),
    at: Annotated[QueryTime, Query(description=AT_HELP + AT_LIST_HELP)] = None,
) -> JSON:
    """Entities in id order; when more follow, a ``Link: <...>; rel="next"`` header points at the next page
    (``after=`` the last id given, or examined, and the same filters). With ``at``, a page may hold fewer entities
    than ``limit``, or none, and still have a link: follow it until there is none."""
    settings = node.settings
    page_size = settings.list_default_limit if limit is None else limit
    if page_size > settings.list_max_limit:
        raise ApiError(422, f"limit must be at most {settings.list_max_limit}")
    if offset > settings.list_max_offset:
        raise ApiError(
            422,
            f"offset must be at most {settings.list_max_offset} (FLUX_LIST_MAX_OFFSET): an offset walks every "
            "entity before it; page deeper with after= (the last id of the page before), as the Link header does",
        )
    scope = effective_prefix(prefix, namespace) or caller.scope()  # a tenant's unfiltered list is its own
    node.guard.check_prefix(caller, scope, "read")
    moment = None if at is None else query_time(at, "at", 0)
    page = await node.cluster.page(scope, offset, page_size, request.headers.get("authorization"), moment, after)
    headers = {}
    if page.after is not None:  # the next page starts after this one: each page costs the same however deep
        headers["Link"] = _next_link(request, page.after, page_size, page.skip)
    return JSON(page.entities, headers=headers)


def _next_link(request: Request, after: str, limit: int, skip: int) -> str:
    """The ``Link`` header of the next page: the same filters, ``after``, ``limit`` and what is left of ``offset``."""
    params = {k: v for k, v in request.query_params.items() if k not in ("offset", "limit", "after")}
    params.update(after=after, limit=str(limit))
    if skip:
        params["offset"] = str(skip)
    return f'<{request.url.path}?{urlencode(params)}>; rel="next"'


@router.get(
    "/api/state/entities/{entity_id:path}",
    response_model=Entity,
    responses={404: {"model": ErrorOut, "description": "Entity not found"}, **AUTH_ERRORS, 400: ERRORS[400]},
)
async def get_entity(
    node: NodeDep, caller: Reader, entity_id: str, at: Annotated[QueryTime, Query(description=AT_HELP)] = None
) -> JSON:
    """One entity; the id may contain '/' (raw or as %2F). With ``at``, as it was then.

    The path arrives percent-decoded once, as clients encode it: ``x%2541`` is the id ``x%41``.
    """
    node.guard.check_entity(caller, entity_id, "read")
    await node.cluster.settle(entity_id)  # partitions on the move: wait a little
    moment = None if at is None else query_time(at, "at", 0)
    entity = node.reader.get(entity_id) if moment is None else await node.history.entity_at(entity_id, moment)
    if entity is None:
        raise ApiError(404, "Entity not found")
    return JSON(entity)
