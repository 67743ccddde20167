"""One lifecycle for a node's long-lived parts: started in order by one owner, stopped in reverse.

Every producer, consumer, background loop and HTTP client of a node is a :class:`Service` (an
``async start()`` and an ``async stop()``), or, when it only needs closing, a closer (an
``async`` callable). :class:`Services` starts them in the order given and, on :meth:`Services.stop`,
stops what it started in reverse order: what was started last (the HTTP server) stops first,
what everything else leans on (the publisher) last. Each stop is bounded and its failure logged,
so one part that hangs or fails (a broker gone away) neither blocks the others nor leaves them
open.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Protocol

log = logging.getLogger(__name__)

STOP_TIMEOUT_S = 10.0


class Service(Protocol):
    """A long-lived part of a node."""

    async def start(self) -> None:
        """Connect, load, or start background tasks; return once the part can be used."""
        ...

    async def stop(self) -> None:
        """Release everything :meth:`start` took (tasks, connections); safe after a failed start."""
        ...


class Services:
    """Starts services in order and stops the started ones in reverse (see the module docstring)."""

    def __init__(self, stop_timeout_s: float = STOP_TIMEOUT_S) -> None:
        self._stop_timeout_s = stop_timeout_s
        self._stack = contextlib.AsyncExitStack()

    async def start(self, *services: Service) -> None:
        """Start ``services`` one after the other; each is stopped on :meth:`stop` once started."""
        for service in services:
            await service.start()
            self._stack.push_async_callback(self._bounded, service.stop, type(service).__name__)

    def close_on_stop(self, close: Callable[[], Awaitable[None]], name: str) -> None:
        """Have :meth:`stop` await ``close()`` (named ``name`` in logs) in its turn."""
        self._stack.push_async_callback(self._bounded, close, name)

    async def stop(self) -> None:
        """Stop every started service and run every closer, the last registered first."""
        await self._stack.aclose()

    async def _bounded(self, stop: Callable[[], Awaitable[None]], name: str) -> None:
        try:
            await asyncio.wait_for(stop(), self._stop_timeout_s)
        except TimeoutError:
            log.warning("%s did not stop within %.0f s; going on", name, self._stop_timeout_s)
        except Exception:
            log.exception("%s failed to stop; going on", name)
