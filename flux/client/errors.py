"""The client's exceptions: one per kind of answer, each carrying the server's ``error`` message and status.

Every error Flux answers is JSON ``{"error": "..."}`` (docs/api.md#errors); :func:`error_from_response`
turns such an answer into the matching :class:`FluxError` subclass. Connection failures that
outlast the retries are :class:`Unavailable` with ``status`` None.
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Mapping
from typing import Any

import httpx


class FluxError(Exception):
    """An error answer of Flux (or no answer at all): ``status`` (None without one), the server's
    ``message``, and the whole JSON ``body`` when there was one."""

    def __init__(self, message: str, status: int | None = None, body: Mapping[str, Any] | None = None) -> None:
        super().__init__(f"{status}: {message}" if status is not None else message)
        self.message = message
        self.status = status
        self.body: Mapping[str, Any] = body or {}


class InvalidRequest(FluxError):
    """400, 413 or 422: the request itself is wrong (an invalid envelope, a bad parameter, a reused key)."""


class PayloadTooLarge(InvalidRequest):
    """413: a body over the server's limits, or more events than a namespace may write in a minute."""


class Unauthorized(FluxError):
    """401: no token, or an unknown one, while auth is on (also a WebSocket closed for its token)."""


class Forbidden(FluxError):
    """403: the token's namespace does not cover the entity, prefix or namespace."""


class NotFound(FluxError):
    """404: no such entity, namespace or replay job."""


class Conflict(FluxError):
    """409: a taken namespace name, or a replay while another runs."""


class RateLimited(FluxError):
    """429: the namespace's events per minute are spent; ``retry_after`` says when to try again (seconds)."""

    def __init__(
        self, message: str, status: int | None = None, body: Mapping[str, Any] | None = None, retry_after: float = 1.0
    ) -> None:
        super().__init__(message, status, body)
        self.retry_after = retry_after


class Unavailable(FluxError):
    """502/503, or no connection: the node cannot serve now (nothing is promised); ``retry_after`` in seconds."""

    def __init__(
        self,
        message: str,
        status: int | None = None,
        body: Mapping[str, Any] | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, status, body)
        self.retry_after = retry_after


class WaitTimeout(FluxError):
    """504 of a ``wait=True`` write: accepted and published, not yet applied; ``pending`` lists the eventIds."""

    def __init__(self, message: str, status: int | None = None, body: Mapping[str, Any] | None = None) -> None:
        super().__init__(message, status, body)
        pending = self.body.get("pending")
        self.pending: list[str] = [str(p) for p in pending] if isinstance(pending, list) else []


class ServerError(FluxError):
    """Any other answer of 500 and above."""


class SubscriptionError(FluxError):
    """An ``error`` message on the WebSocket that the subscriber cannot recover from; ``pattern`` names
    the subscription it concerns, if any."""

    def __init__(self, message: str, pattern: str | None = None) -> None:
        super().__init__(message)
        self.pattern = pattern


BY_STATUS: dict[int, type[FluxError]] = {
    400: InvalidRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    413: PayloadTooLarge,
    422: InvalidRequest,
    504: WaitTimeout,
}


def retry_after(response: httpx.Response) -> float | None:
    """The ``Retry-After`` header in seconds (delta seconds or an HTTP date), or None."""
    value = response.headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, moment.timestamp() - time.time())


def _body(response: httpx.Response) -> Mapping[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def error_from_response(response: httpx.Response) -> FluxError:
    """The exception for an error answer: its class by status, the server's ``error`` as message."""
    body = _body(response)
    message = body.get("error")
    if not isinstance(message, str):
        message = response.text[:500] or response.reason_phrase
    status = response.status_code
    if status == 429:
        return RateLimited(message, status, body, retry_after(response) or 1.0)
    if status in (502, 503):
        return Unavailable(message, status, body, retry_after(response))
    kind = BY_STATUS.get(status, ServerError if status >= 500 else InvalidRequest)
    return kind(message, status, body)
