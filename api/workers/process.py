"""An HTTP process of a node: the API on the node's port, reading the reducer process's table.

Started by :class:`api.workers.supervisor.HttpProcesses` with the listening socket's file
descriptor. It runs everything a request needs except the fold: its own publisher (single events
from all its connections coalesced, batches group-committed), change relay and WebSocket hub,
namespace and idempotency-key followers, and reads through :class:`agents.table.replica.ReplicaTable`.
``/metrics`` and replays are the reducer process's (:class:`api.workers.control.ReducerPassThrough`).
This module is, beside :mod:`api.server`, the other composition root wiring ``agents`` and ``api``.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import gc
import logging
import logging.config
import os
import shutil
import signal
import socket
import sys
from pathlib import Path

from agents.history.store import HistoryStore
from agents.table.applied_board import AppliedBoard
from agents.table.replica import RebuildStatus, ReplicaTable
from api.app import app_node, create_app
from api.http_server import HttpServer
from api.live.applied import AppliedOffsets
from api.live.hub import MetricsTicker
from api.live.relay import ChangeRelay, FeedTotals
from api.workers.control import ControlLink, ReducerPassThrough
from flux.config import Settings
from flux.kafka.idempotency import IdempotencyLog
from flux.kafka.namespace_log import NamespaceLog
from flux.kafka.options import uses_tls
from flux.kafka.publisher import EventPublisher
from flux.kafka.webhook_log import WebhookLog
from flux.lifecycle import Services
from flux.logs import process_logging_config
from flux.metrics import Metrics
from flux.model.replay import ReplayJob, ReplayRange

log = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1


class ReplaysInReducer:
    """Replays run in the reducer process; an HTTP process passes their routes through to it
    (:class:`api.workers.control.ReducerPassThrough`), so these are never reached."""

    def start(self, replay_range: ReplayRange) -> ReplayJob:
        """Not here: see the class docstring."""
        raise RuntimeError("replays run in the reducer process")

    def get(self, job_id: str) -> ReplayJob | None:
        """Not here: see the class docstring."""
        raise RuntimeError("replays run in the reducer process")

    def all(self) -> list[ReplayJob]:
        """Not here: see the class docstring."""
        raise RuntimeError("replays run in the reducer process")

    async def cancel(self, job_id: str) -> ReplayJob | None:
        """Not here: see the class docstring."""
        raise RuntimeError("replays run in the reducer process")


def _die_with_parent(parent: int) -> None:
    """Have the kernel kill this process when its parent (the reducer process) dies."""
    with_libc = ctypes.CDLL(None, use_errno=True)
    with_libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before the line above
        os._exit(1)


async def serve(settings: Settings, index: int, sock: socket.socket, control: str, board_path: Path) -> int:
    """Run the HTTP process until SIGTERM/SIGINT; returns its exit code."""
    metrics = Metrics()
    publisher = EventPublisher(
        settings, transactional_id=f"{settings.app_id}-publisher-{settings.node_id}-{settings.port}-{index}"
    )
    link = ControlLink(control, index, metrics.counters)
    board = AppliedBoard.open(board_path, settings.partitions)
    secondaries = settings.data_dir / "http-processes" / str(index)
    shutil.rmtree(secondaries, ignore_errors=True)
    table = ReplicaTable(settings.partitions, link.status, board, secondaries, index)
    history = HistoryStore(table, settings.partitions, RebuildStatus(link.status))
    applied = AppliedOffsets()
    totals = FeedTotals()
    relay = ChangeRelay(settings, applied, totals)
    namespaces = NamespaceLog(settings)
    idempotency = IdempotencyLog(settings)
    http_app = create_app(
        settings, publisher, table, metrics, applied, namespaces, history, idempotency, ReplaysInReducer()
    )
    node = app_node(http_app)
    webhooks = WebhookLog(settings)  # registrations, for the routes (api.routes.webhooks); deliveries are the reducer's
    http_app.state.webhooks = webhooks
    relay.listen(table.on_change)  # the overlay first: a subscriber told of a change can read it at once
    relay.listen(node.hub.on_record)
    relay.listen(metrics.relayed)  # flux_relay_latency_ms: once the hub has the change
    metrics.relay_lag = relay.lag
    http = HttpServer(settings, ReducerPassThrough(http_app, link), sock=sock)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    services = Services()
    try:
        await services.start(
            publisher, namespaces, idempotency, webhooks, link, table, relay, MetricsTicker(node.hub, totals)
        )
        services.close_on_stop(node.calls.close, "NodeCalls")
        await services.start(http)
        gc.freeze()  # what start-up built lives as long as the process: keep it out of every collection
        link.serving = True
        await link.sync()
        await stopping.wait()
    finally:
        link.serving = False
        await services.stop()
        board.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m api.workers.process --index N --fd FD --control SOCKET --board FILE --parent PID``."""
    parser = argparse.ArgumentParser(prog="flux-http-process")
    parser.add_argument("--index", type=int, required=True)
    parser.add_argument("--fd", type=int, required=True)
    parser.add_argument("--control", required=True)
    parser.add_argument("--board", required=True)
    parser.add_argument("--parent", type=int, required=True)
    args = parser.parse_args(argv)
    _die_with_parent(args.parent)
    settings = Settings()
    os.nice(settings.http_process_niceness)  # the fold, in the reducer process, comes first
    logging.config.dictConfig(
        process_logging_config(settings.log_format, settings.node_id, settings.log_level, settings.access_log)
    )
    sock = socket.socket(fileno=args.fd)
    if not uses_tls(settings):  # as the reducer process: uvloop closes TLS connections slowly (see uses_tls)
        import uvloop

        uvloop.install()
    return asyncio.run(serve(settings, args.index, sock, args.control, Path(args.board)))


if __name__ == "__main__":
    sys.exit(main())
