"""Whether a broker is there: free and busy ports, and a Kafka metadata request from sync code."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import socket
import time
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from flux.localkafka.base import DEFAULT_HOST, LocalKafkaError

log = logging.getLogger(__name__)

T = TypeVar("T")


def free_port(host: str = DEFAULT_HOST) -> int:
    """A TCP port that is free right now on ``host`` (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def port_in_use(host: str, port: int) -> bool:
    """True when something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_port_free(host: str, port: int, timeout: float) -> bool:
    """Wait up to ``timeout`` seconds until nothing accepts connections on ``host:port``; True if free."""
    deadline = time.monotonic() + timeout
    while port_in_use(host, port):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)
    return True


def run_sync(make_coro: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine to completion from sync code, even when this thread already runs an event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(make_coro())
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(lambda: asyncio.run(make_coro())).result()


async def probe_broker(bootstrap: str, timeout: float = 5.0) -> list[int]:
    """Send a Kafka metadata request to ``bootstrap``; return the broker ids it reports (raises if none)."""
    from aiokafka.admin import AIOKafkaAdminClient  # lazy: only the probe needs aiokafka

    host, _, port = bootstrap.split(",")[0].rpartition(":")
    if not port_in_use(host.strip("[]") or DEFAULT_HOST, int(port)):
        # Not listening yet: fail fast without aiokafka (which logs every refused connection).
        raise ConnectionRefusedError(f"nothing listens on {bootstrap} yet")
    request_timeout_ms = max(1000, int(timeout * 1000))
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap, client_id="flux-localkafka-probe", request_timeout_ms=request_timeout_ms
    )
    try:
        async with asyncio.timeout(timeout):
            await admin.start()
            cluster = await admin.describe_cluster()
    finally:
        with contextlib.suppress(Exception):
            await admin.close()
    brokers = [int(b["node_id"]) for b in cluster.get("brokers", [])]
    if not brokers:
        raise LocalKafkaError(f"{bootstrap} answered but reports no live brokers yet")
    return brokers


def broker_answers(bootstrap: str, timeout: float = 5.0) -> bool:
    """True when a Kafka broker at ``bootstrap`` answers a metadata request within ``timeout`` seconds."""
    try:
        run_sync(lambda: probe_broker(bootstrap, timeout))
    except Exception as exc:
        log.debug("probe of %s failed: %r", bootstrap, exc)
        return False
    return True
