"""Reading a JSON request body: size limits first (413), then parsing (400)."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import Request

from api.errors import ApiError


async def read_json(request: Request, max_bytes: int) -> Any:
    """The parsed JSON body; 413 past ``max_bytes`` (checked before and while reading), 400 if malformed."""
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
