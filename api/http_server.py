"""uvicorn serving a Flux app, as a :class:`flux.lifecycle.Service` of a node's process."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Generator
from typing import Any

import uvicorn

from flux.config import Settings
from flux.logs import ACCESS_LOGGER

log = logging.getLogger(__name__)


class _EmbeddedUvicorn(uvicorn.Server):
    """uvicorn without its own signal handling: the Faust worker owns the process's signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


class HttpServer:
    """uvicorn serving the FastAPI app on ``FLUX_HOST:FLUX_PORT``, on an inherited listening socket
    (``sock``, an HTTP process) or on a Unix socket (``uds``, the reducer process beside HTTP processes)."""

    def __init__(
        self, settings: Settings, http_app: Any, sock: socket.socket | None = None, uds: str | None = None
    ) -> None:
        self._settings = settings
        self._sock = sock
        self._where = f"unix socket {uds}" if uds else f"http://{settings.host}:{settings.port}"
        self._quiet = sock is not None or uds is not None
        config = uvicorn.Config(
            http_app,
            host=settings.host,
            port=settings.port,
            uds=uds,
            lifespan="off",
            access_log=settings.access_log,
            log_config=None,  # uvicorn's records go to the worker's handler, in the node's format
            log_level=settings.log_level.lower(),
            http="httptools",
            ws="websockets-sansio",
            ws_per_message_deflate=False,  # compressing small JSON messages costs more CPU than it saves
            ws_max_size=settings.ws_max_message_bytes,  # larger client frames are refused before they are buffered
        )
        if settings.access_log:  # uvicorn.Config set its access logger to FLUX_LOG_LEVEL: the lines are INFO
            logging.getLogger(ACCESS_LOGGER).setLevel(logging.INFO)
        self._server = _EmbeddedUvicorn(config)
        self._serving: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Listen; raises what kept the server from starting (e.g. the port is taken)."""
        self._serving = asyncio.create_task(
            self._server.serve(None if self._sock is None else [self._sock]), name="flux-http"
        )
        while not self._server.started:
            if self._serving.done():
                self._serving.result()
                raise RuntimeError(f"HTTP server on {self._where} did not start")
            await asyncio.sleep(0.02)
        if not self._quiet:
            log.warning("Flux listening on %s", self._where)

    async def stop(self) -> None:
        """Stop accepting requests and finish the ones in flight."""
        if self._serving is not None:
            self._server.should_exit = True
            await self._serving
