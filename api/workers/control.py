"""The control channel between a node's reducer process and its HTTP processes.

The reducer process serves its own FastAPI app on a Unix socket (``FLUX_DATA_DIR/reducer.sock``),
with one more route, ``POST /control/sync``. Every HTTP process calls it every
:data:`SYNC_INTERVAL_S`: it reports its counters (published events, WebSocket connections) and
whether it serves HTTP yet, its memory and CPU, its change relay's lag, and the histogram series
(latencies) that changed since its last sync, and gets back the table's status, a
:class:`agents.table.replica.TableStatus` (assignment, recovery, readiness, store paths, history
rebuilds). An HTTP process that has not heard from the reducer for :data:`STALE_AFTER_S` (a frozen
or dying reducer) serves no partition and is not ready. The few routes that act on the reducer
itself (``/metrics``, replays) are passed through to it unchanged by :class:`ReducerPassThrough`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from typing import Any

import httpx
import orjson
from fastapi import APIRouter, FastAPI, Request
from starlette.types import Receive, Scope, Send

from api.responses import JSON
from flux.metrics import Metrics, SeriesKey, WorkerCounters
from flux.model.state import Readiness, TableStatus

log = logging.getLogger(__name__)

SYNC_INTERVAL_S = 0.2
STALE_AFTER_S = 2.0
SYNC_TIMEOUT_S = 1.0
STATUS_CACHE_S = 0.05  # one status serves the syncs of every HTTP process that arrive together
READINESS_CACHE_S = 2.0  # readiness asks the broker for metadata
READINESS_CACHE_RECOVERING_S = 0.25  # ...but say "ready" soon after recovery
PASS_THROUGH_PREFIXES = ("/metrics", "/api/admin/")
HOP_BY_HOP = frozenset(  # headers of the connection to this process, not of the request: never passed on
    {b"host", b"content-length", b"transfer-encoding", b"connection", b"keep-alive", b"upgrade", b"te", b"trailer"}
    | {b"expect", b"proxy-connection", b"proxy-authorization"}
)


def status_to_json(status: TableStatus) -> dict[str, Any]:
    """The wire form of a :class:`TableStatus`."""
    data = asdict(status)
    data["paths"] = {str(p): path for p, path in status.paths.items()}
    data["rebuilding"] = {str(p): list(progress) for p, progress in status.rebuilding.items()}
    data["readiness"]["standbys"] = {str(p): n for p, n in status.readiness.standbys.items()}
    data["readiness"]["catching_up"] = {str(p): n for p, n in status.readiness.catching_up.items()}
    return data


def status_from_json(data: dict[str, Any]) -> TableStatus:
    """A :class:`TableStatus` from :func:`status_to_json`'s form."""
    ready = data["readiness"]
    return TableStatus(
        recovered=bool(data["recovered"]),
        active=[int(p) for p in data["active"]],
        owners={str(url): [int(p) for p in ps] for url, ps in data["owners"].items()},
        paths={int(p): str(path) for p, path in data["paths"].items()},
        rebuilding={int(p): (int(a), int(b)) for p, (a, b) in data["rebuilding"].items()},
        readiness=Readiness(
            bool(ready["ready"]),
            bool(ready["broker"]),
            bool(ready["recovered"]),
            [int(p) for p in ready["partitions"]],
            str(ready["detail"]),
            {int(p): int(n) for p, n in ready["standbys"].items()},
            {int(p): int(n) for p, n in ready.get("catching_up", {}).items()},
        ),
        entities=int(data["entities"]),
        generation=int(data["generation"]),
    )


class WorkerRoster:
    """The reducer process's record of its HTTP processes: which serve, and their counters."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics
        self.serving: set[int] = set()

    def report(self, index: int, serving: bool, counters: WorkerCounters) -> None:
        """Record one HTTP process's sync (its histograms not in it are unchanged since its last one)."""
        self._metrics.report(index, counters)
        if serving:
            self.serving.add(index)
        else:
            self.serving.discard(index)

    def forget(self, index: int) -> None:
        """An HTTP process ended: its connections and gauges are gone; what it counted (published events,
        drops, histograms) stays in the node's totals, so a new process in its place adds to them."""
        self._metrics.retire(index)
        self.serving.discard(index)


def install_control(app: FastAPI, roster: WorkerRoster, status: Callable[[], Awaitable[TableStatus]]) -> None:
    """Add ``POST /control/sync`` to the reducer process's app (served on its Unix socket only)."""
    router = APIRouter(include_in_schema=False)

    @router.post("/control/sync")
    async def sync(request: Request) -> JSON:
        body = await request.json()
        roster.report(int(body["worker"]), bool(body.get("serving")), WorkerCounters.from_json(body.get("counters")))
        return JSON(status_to_json(await status()))

    app.include_router(router)


class StatusSource:
    """Builds the reducer's :class:`TableStatus` for the sync route, cached for :data:`STATUS_CACHE_S`,
    its readiness for :data:`READINESS_CACHE_S` (a readiness check asks the broker for metadata)."""

    def __init__(self, build: Callable[[], TableStatus], readiness: Callable[[], Awaitable[Readiness]]) -> None:
        self._build = build
        self._readiness = readiness
        self._status: tuple[float, TableStatus] | None = None
        self._ready: tuple[float, Readiness] | None = None

    async def __call__(self) -> TableStatus:
        """The current status."""
        now = time.monotonic()
        if self._status is not None and now - self._status[0] <= STATUS_CACHE_S:
            return self._status[1]
        status = self._build()
        ready = self._ready
        max_age = READINESS_CACHE_S if ready is not None and ready[1].ready else READINESS_CACHE_RECOVERING_S
        if ready is None or now - ready[0] > max_age or ready[1].recovered != status.recovered:
            ready = self._ready = (now, await self._readiness())
        status.readiness = ready[1]
        self._status = (now, status)
        return status


def _unanswered(why: str) -> TableStatus:
    return TableStatus(readiness=Readiness(False, False, False, detail=why))


class ControlLink:
    """An HTTP process's end of the control channel (see the module docstring)."""

    def __init__(self, socket_path: str, index: int, counters: Callable[[], WorkerCounters]) -> None:
        self._index = index
        self._counters = counters
        self.client = httpx.AsyncClient(
            transport=httpx.AsyncHTTPTransport(uds=socket_path), base_url="http://reducer", timeout=SYNC_TIMEOUT_S
        )
        self._status = _unanswered("waiting for the node's reducer process")
        self._heard = 0.0
        self.serving = False
        self._task: asyncio.Task[None] | None = None
        self._sent: dict[SeriesKey, int] = {}  # histogram series -> its count the reducer took

    def status(self) -> TableStatus:
        """The reducer's last word, or not ready when it has not answered for :data:`STALE_AFTER_S`."""
        if time.monotonic() - self._heard > STALE_AFTER_S:
            return _unanswered("the node's reducer process does not answer")
        return self._status

    async def start(self) -> None:
        """Sync once (waiting up to a minute for the reducer's socket), then every :data:`SYNC_INTERVAL_S`."""
        deadline = time.monotonic() + 60
        while not await self.sync():
            if time.monotonic() > deadline:
                raise RuntimeError("the node's reducer process does not answer on its control socket")
            await asyncio.sleep(0.2)
        self._task = asyncio.create_task(self._run(), name="flux-control-sync")

    async def stop(self) -> None:
        """Stop syncing and close the connection."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.client.aclose()

    async def sync(self) -> bool:
        """One exchange with the reducer; False when it did not answer."""
        counters = self._counters()
        sent = self._sent
        changed = {key: h.count for key, h in counters.histograms.items() if h.count != sent.get(key)}
        body = {"worker": self._index, "serving": self.serving, "counters": counters.to_json(changed)}
        try:
            answer = await self.client.post("/control/sync", json=body)
            answer.raise_for_status()
            self._status = status_from_json(answer.json())
        except Exception as exc:  # the reducer is busy, frozen or gone: status() turns stale
            log.debug("control sync failed: %r", exc)
            return False
        sent.update(changed)
        self._heard = time.monotonic()
        return True

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(SYNC_INTERVAL_S)
            await self.sync()


class ReducerPassThrough:
    """ASGI wrapper of an HTTP process's app: requests for ``/metrics`` and ``/api/admin/...``
    (replays run in the reducer process) go to the reducer's app as they are."""

    def __init__(self, app: Any, link: ControlLink) -> None:
        self._app = app
        self._link = link

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request through, or hand it to the app."""
        if scope["type"] != "http" or not scope["path"].startswith(PASS_THROUGH_PREFIXES):
            await self._app(scope, receive, send)
            return
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        # leading and trailing whitespace is not part of a header's value (RFC 9110 5.5); h11 refuses it
        headers = [(k, v.strip(b" \t")) for k, v in scope["headers"] if k.lower() not in HOP_BY_HOP]
        query = scope.get("query_string", b"")
        raw_path = scope.get("raw_path") or scope["path"].encode()  # as the client sent it, still percent-encoded
        try:
            url = httpx.URL("http://reducer", raw_path=raw_path + (b"?" + query if query else b""))
            answer = await self._link.client.request(
                scope["method"], url, headers=headers, content=body, timeout=httpx.Timeout(120.0)
            )
        except (httpx.LocalProtocolError, httpx.InvalidURL) as exc:  # the request itself cannot be sent on
            await _error(send, 400, f"invalid request: {exc}")
            return
        except httpx.HTTPError as exc:
            log.warning("could not pass %s %s on to the reducer process: %r", scope["method"], scope["path"], exc)
            await _error(send, 503, "the node's reducer process does not answer; retry shortly")
            return
        hop = {b"content-length", b"transfer-encoding", b"connection", b"date", b"server"}  # uvicorn adds its own
        out = [(k, v) for k, v in answer.headers.raw if k.lower() not in hop]
        out.append((b"content-length", str(len(answer.content)).encode()))
        await send({"type": "http.response.start", "status": answer.status_code, "headers": out})
        await send({"type": "http.response.body", "body": answer.content})


async def _error(send: Send, status: int, message: str) -> None:
    """Answer ``{"error": message}`` with ``status``."""
    payload = orjson.dumps({"error": message})
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})
