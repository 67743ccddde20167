"""The reducer process's HTTP processes: started on one listening socket, restarted, stopped.

The reducer process binds ``FLUX_HOST:FLUX_PORT`` once and starts ``FLUX_HTTP_PROCESSES``
children (:mod:`api.workers.process`) that all accept connections on that socket, as uvicorn's
own multi-process mode does. A child that dies is started again (a crash loop, more than
:data:`MAX_RESTARTS` in :data:`RESTART_WINDOW_S`, stops the node with exit code 1). Children die
with the reducer process (``PR_SET_PDEATHSIG``), so a killed node leaves nothing behind; on a
normal stop they get SIGTERM first and finish the requests in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from api.workers.control import WorkerRoster
from flux.config import Settings

log = logging.getLogger(__name__)

MAX_RESTARTS = 5
RESTART_WINDOW_S = 60.0
START_TIMEOUT_S = 90.0
POLL_S = 0.25


def listening_socket(host: str, port: int) -> socket.socket:
    """A socket listening on ``host:port`` that child processes can inherit."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


class HttpProcesses:
    """The node's HTTP processes, as a :class:`flux.lifecycle.Service` of the reducer process."""

    def __init__(
        self,
        settings: Settings,
        count: int,
        control_socket: Path,
        board: Path,
        roster: WorkerRoster,
        crash: Callable[[BaseException], None],
    ) -> None:
        self._settings = settings
        self._count = count
        self._control_socket = control_socket
        self._board = board
        self._roster = roster
        self._crash = crash
        self._socket: socket.socket | None = None
        self._children: dict[int, subprocess.Popen[bytes]] = {}
        self._restarts: list[float] = []
        self._stopping = False
        self._task: asyncio.Task[None] | None = None

    def _spawn(self, index: int) -> None:
        assert self._socket is not None
        fd = self._socket.fileno()
        command = [
            sys.executable,
            "-m",
            "api.workers.process",
            f"--index={index}",
            f"--fd={fd}",
            f"--control={self._control_socket}",
            f"--board={self._board}",
            f"--parent={os.getpid()}",
        ]
        self._children[index] = subprocess.Popen(command, pass_fds=(fd,))

    async def start(self) -> None:
        """Listen, start the children, and return once every one serves HTTP."""
        self._socket = listening_socket(self._settings.host, self._settings.port)
        for index in range(self._count):
            self._spawn(index)
        deadline = time.monotonic() + START_TIMEOUT_S
        while len(self._roster.serving) < self._count:
            for index, child in self._children.items():
                if child.poll() is not None:
                    raise RuntimeError(f"HTTP process {index} exited with code {child.returncode} while starting")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the HTTP processes did not start within {START_TIMEOUT_S:.0f} s")
            await asyncio.sleep(0.05)
        self._task = asyncio.create_task(self._watch(), name="flux-http-processes")
        log.warning(
            "Flux listening on http://%s:%d (%d HTTP processes)", self._settings.host, self._settings.port, self._count
        )

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(POLL_S)
            for index, child in list(self._children.items()):
                code = child.poll()
                if code is None or self._stopping:
                    continue
                self._roster.forget(index)
                now = time.monotonic()
                self._restarts = [t for t in self._restarts if now - t < RESTART_WINDOW_S] + [now]
                if len(self._restarts) > MAX_RESTARTS:
                    self._crash(RuntimeError(f"HTTP processes keep exiting (process {index}: code {code})"))
                    return
                log.error("HTTP process %d exited with code %s; starting it again", index, code)
                self._spawn(index)

    async def stop(self) -> None:
        """SIGTERM every child (they finish the requests in flight), SIGKILL what is left after the
        shutdown timeout, and close the socket."""
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for child in self._children.values():
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self._settings.shutdown_timeout_s
        while any(child.poll() is None for child in self._children.values()) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for child in self._children.values():
            if child.poll() is None:
                child.kill()
                child.wait()
        if self._socket is not None:
            self._socket.close()
