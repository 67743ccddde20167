"""Query parameters shared by several routes: id scopes, times and history queries."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any

from pydantic import BeforeValidator

from api.errors import ApiError
from flux.model.events import MAX_TIMESTAMP_MS
from flux.model.history import HistoryQuery, InvalidQuery, decode_cursor


def effective_prefix(prefix: str, namespace: str | None) -> str:
    """The id prefix for ``?prefix`` within ``?namespace`` (ids ``namespace/...``)."""
    if namespace is None:
        return prefix
    scope = f"{namespace}/"
    return prefix if prefix.startswith(scope) else scope + prefix


_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})?")


def _unix_ms_or_rfc3339(value: Any) -> Any:
    """Let through digits (Unix ms) and RFC 3339 text only: pydantic would take '0.5' as seconds."""
    if isinstance(value, str) and not value.isdigit() and not _RFC3339.fullmatch(value):
        raise ValueError("must be Unix epoch milliseconds or an RFC 3339 time such as 2026-02-23T10:30:00Z")
    return value


QueryTime = Annotated[int | datetime | None, BeforeValidator(_unix_ms_or_rfc3339)]
"""A time query parameter: Unix epoch ms, or RFC 3339 with a zone (see :func:`query_time`)."""


def query_time(value: QueryTime, name: str, default: int) -> int:
    """A time parameter as Unix ms (``default`` when absent); 400 if it cannot be used.

    Unix ms must lie in the timestamp range; an RFC 3339 time needs a zone, and times before
    1970 mean the beginning (no event is older).
    """
    if value is None:
        return default
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ApiError(400, f"{name} needs a time zone (e.g. a trailing Z for UTC)")
        return min(MAX_TIMESTAMP_MS, max(0, int(value.timestamp() * 1000)))
    if not 0 <= value <= MAX_TIMESTAMP_MS:
        raise ApiError(400, f"{name} must be between 0 and {MAX_TIMESTAMP_MS} (Unix epoch ms)")
    return value


def history_query(
    *,
    entity: str | None,
    prefix: str,
    since: int,
    until: int,
    order: str,
    limit: int,
    cursor: str | None,
    stream: str | None,
    source: str | None,
) -> HistoryQuery:
    """The history query of ``GET /api/events`` parameters; 400 for a cursor that is not ours."""
    try:
        after = None if cursor is None else decode_cursor(cursor)
    except InvalidQuery as exc:
        raise ApiError(400, str(exc)) from exc
    return HistoryQuery(
        entity=entity,
        prefix=prefix,
        since=since,
        until=until,
        descending=order == "desc",
        limit=limit,
        after=after,
        streams=None if stream is None else frozenset([stream]),
        sources=None if source is None else frozenset([source]),
    )
