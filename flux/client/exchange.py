"""One logical call as data (:class:`Call`), and the rules of its tries (:class:`Exchange`), without I/O.

A :class:`Call` says what to send (method, path, query, body, idempotency key), how to read the
answer, and whether the request may be sent again. An :class:`Exchange` takes the answers (or
connection errors) of a call's tries one by one and either gives the result, raises the
:class:`~flux.client.errors.FluxError`, or asks for another try after a pause
(:class:`TryAgain`). The sync and async clients run the same exchanges, each with its own HTTP
client and sleep.

What is retried: answers 429, 502 and 503, and connection errors. A call marked
:data:`Safety.ONCE` (registering a namespace, starting a replay: a repeat after an unseen
success would fail or do it twice) is retried only when the server certainly did nothing: the
connection was never made, or the answer is 429 (refused before anything happened).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import httpx

from flux import __version__
from flux.client.errors import Unavailable, error_from_response, retry_after
from flux.client.retry import Attempts, RetryPolicy

T = TypeVar("T")

RETRY_STATUSES = frozenset({429, 502, 503})
IDEMPOTENCY_HEADER = "X-Idempotency-Key"
USER_AGENT = f"flux-client/{__version__}"
UNSENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)  # the request never left


class Safety(enum.Enum):
    """Whether a request may be sent again when its outcome is unknown."""

    REPEATABLE = "repeatable"  # a repeat changes nothing more (reads, deletions, keyed publishes)
    ONCE = "once"  # retried only when the server certainly did nothing


@dataclass(frozen=True)
class Call(Generic[T]):
    """A request and how to read its answer.

    ``decode`` reads a 2xx answer, and those of the statuses in ``accept``; ``gone`` is the result
    when a retry finds 404 (an earlier try, whose answer was lost, already deleted the thing);
    ``retry`` False sends it once whatever happens (probes).
    """

    method: str
    url: str
    decode: Callable[[httpx.Response], T]
    params: Mapping[str, str] | None = None
    body: bytes | None = None
    key: str | None = None
    safety: Safety = Safety.REPEATABLE
    accept: frozenset[int] = frozenset()
    gone: Callable[[], T] | None = None
    retry: bool = True


@dataclass(frozen=True)
class Page(Generic[T]):
    """A page of a list and the call of the next page (None: the last one)."""

    items: list[T]
    next: Call[Page[T]] | None = field(default=None, repr=False)


class TryAgain(Exception):
    """Send the call again after ``delay`` seconds."""

    def __init__(self, delay: float) -> None:
        super().__init__(delay)
        self.delay = delay


def auth_headers(token: str | None) -> dict[str, str]:
    """The headers every request of a client carries."""
    headers = {"User-Agent": USER_AGENT}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return headers


class Exchange(Generic[T]):
    """The tries of one :class:`Call` under a retry policy."""

    def __init__(self, call: Call[T], policy: RetryPolicy, headers: Mapping[str, str]) -> None:
        self.call = call
        self.attempts = Attempts(policy)
        self.headers = dict(headers)
        if call.body is not None:
            self.headers["Content-Type"] = "application/json"
        if call.key is not None:
            self.headers[IDEMPOTENCY_HEADER] = call.key
        self.retried = False

    def _again(self, retry_after: float | None) -> float | None:
        if not self.call.retry:
            return None
        delay = self.attempts.pause(retry_after)
        if delay is not None:
            self.retried = True
        return delay

    def outcome(self, response: httpx.Response) -> T:
        """The call's result from an answer; raises :class:`TryAgain` or the answer's FluxError."""
        status = response.status_code
        call = self.call
        if status < 300 or status in call.accept:
            return call.decode(response)
        if status == 404 and self.retried and call.gone is not None:
            return call.gone()
        if status in RETRY_STATUSES and (status == 429 or call.safety is Safety.REPEATABLE):
            delay = self._again(retry_after(response))
            if delay is not None:
                raise TryAgain(delay)
        raise error_from_response(response)

    def failed(self, exc: httpx.TransportError) -> float:
        """The pause before the next try after a connection error; raises :class:`Unavailable` when
        the request may not be repeated or the retries are spent."""
        delay = None
        if isinstance(exc, UNSENT) or self.call.safety is Safety.REPEATABLE:
            delay = self._again(None)
        if delay is None:
            what = f"{self.call.method} {self.call.url}"
            raise Unavailable(f"{what}: {type(exc).__name__}: {exc}".rstrip(": ")) from exc
        return delay
