"""Every error leaves as JSON ``{"error": "..."}`` with the right status, never as a bare 500."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.routing import Match

from api.cluster.forward import Forwarder, OwnerUnreachable
from api.responses import JSON
from flux.kafka.publisher import PublishFailed
from flux.model.state import PartitionUnavailable, StateReader

log = logging.getLogger(__name__)


class ApiError(Exception):
    """An error answer: status, message, optional extra fields and headers."""

    def __init__(
        self, status: int, message: str, extra: dict[str, Any] | None = None, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.extra = extra or {}
        self.headers = headers


def error_response(status: int, message: str, extra: dict[str, Any] | None = None, **kw: Any) -> JSON:
    """A JSON error body ``{"error": message, **extra}``."""
    return JSON({"error": message, **(extra or {})}, status_code=status, **kw)


def _describe_validation(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err.get("loc", ()) if p not in ("query", "path", "body"))
        parts.append(f"{where}: {err.get('msg')}" if where else str(err.get("msg")))
    return "; ".join(parts) or "invalid request"


HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def _allowed_methods(app: FastAPI, request: Request) -> list[str]:
    """Every method some route of ``app`` fully matches at ``request``'s path."""
    return [
        method
        for method in HTTP_METHODS
        if any(route.matches({**request.scope, "method": method})[0] == Match.FULL for route in app.routes)
    ]


def install_error_handlers(app: FastAPI, forwarder: Forwarder, reader: StateReader) -> None:
    """Route every exception kind to a JSON error answer; reads of partitions served elsewhere go
    to their owner (``reader`` knows who it is) through ``forwarder``."""

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSON:
        return error_response(exc.status, exc.message, exc.extra, headers=exc.headers)

    @app.exception_handler(PartitionUnavailable)
    async def _elsewhere(request: Request, exc: PartitionUnavailable) -> Response:
        """A partition another node serves: relay the read there (see :mod:`api.cluster.forward`)."""
        owner = reader.owner_url(exc.partition) if exc.partition >= 0 else None
        target = forwarder.target(request, owner)
        if target is not None:
            try:
                return await forwarder.forward(request, target)
            except OwnerUnreachable as unreachable:
                return error_response(503, str(unreachable), headers={"Retry-After": "1"})
        return error_response(503, str(exc), headers={"Retry-After": "1"})

    @app.exception_handler(PublishFailed)  # the broker did not acknowledge in time: nothing is promised
    async def _unavailable(_: Request, exc: Exception) -> JSON:
        return error_response(503, str(exc), headers={"Retry-After": "1"})

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSON:
        return error_response(422, _describe_validation(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSON:
        headers = getattr(exc, "headers", None)
        if exc.status_code == 405:  # Starlette names only the first route of the path; name them all
            headers = {**(headers or {}), "Allow": ", ".join(_allowed_methods(app, request))}
        return error_response(exc.status_code, str(exc.detail), headers=headers)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSON:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return error_response(500, f"internal error: {type(exc).__name__}")
