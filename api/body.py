"""Reading a JSON request body: its media type first (415), then size limits (413), then parsing (400).

A body is read only when it is declared JSON (``application/json``, with parameters such as
``charset`` or not, or a structured ``application/*+json`` type). Browsers send ``text/plain``,
form types or no type at all from any page without asking the server first (a CORS "simple
request"), while a JSON type makes them ask, which Flux never grants: so refusing other types is
what keeps a web page from publishing, deleting or replaying through a browser that can reach an
open Flux (docs/security.md).
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import Request

from api.errors import ApiError

EXPECTED_TYPE = "application/json"


def is_json_type(content_type: str | None) -> bool:
    """Whether a ``Content-Type`` value declares JSON: ``application/json`` or ``application/*+json``,
    any parameters aside, in any case."""
    if content_type is None:
        return False
    media_type = content_type.split(";", 1)[0].strip().lower()
    kind, slash, subtype = media_type.partition("/")
    return kind == "application" and slash == "/" and (subtype == "json" or subtype.endswith("+json"))


def require_json_type(request: Request) -> None:
    """415 unless the request declares a JSON body (see :func:`is_json_type`)."""
    content_type = request.headers.get("content-type")
    if not is_json_type(content_type):
        given = "no Content-Type" if content_type is None else f"Content-Type {content_type!r}"
        raise ApiError(415, f"the request body must be JSON: send 'Content-Type: {EXPECTED_TYPE}' (got {given})")


async def read_json(request: Request, max_bytes: int) -> Any:
    """The parsed JSON body; 415 unless declared JSON, 413 past ``max_bytes`` (checked before and while
    reading), 400 if malformed."""
    require_json_type(request)
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            too_big = int(declared) > max_bytes
        except ValueError as exc:
            raise ApiError(400, "Content-Length must be an integer") from exc
        if too_big:
            raise ApiError(413, f"request body is larger than the limit of {max_bytes} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise ApiError(413, f"request body is larger than the limit of {max_bytes} bytes")
        chunks.append(chunk)
    body = b"".join(chunks)
    if not body.strip():
        raise ApiError(400, "request body is empty; expected JSON")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, f"malformed JSON: {exc}") from exc
