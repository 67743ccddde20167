"""One Flux node: the Faust worker (reducer agent, entity table) and the HTTP server in one loop.

This is the composition root, the one module that wires ``agents`` and ``api`` together. The
Faust worker owns the process: it handles SIGINT/SIGTERM and stops the HTTP service it was
given, which stops accepting requests, then closes the publisher.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import faust
import mode

from agents.app import create_faust_app, quiet_logging
from agents.applied_lag import AppliedLagWatch
from agents.change_feed import ChangeFeed
from agents.history.rebuild import HistoryRebuilder
from agents.history.store import HistoryStore
from agents.log_reader import committed_offsets
from agents.membership_fence import MembershipFence
from agents.reducer_agent import BatchReducer, install_reducer
from agents.replay.jobs import ReplayJobs
from agents.stall_watch import StallWatch
from agents.table.applied_board import AppliedBoard
from agents.table.standby import StandbyTailer
from agents.table.store import EntityStore
from api.app import app_node, create_app
from api.cluster.node_calls import NodeCalls
from api.http_server import HttpServer
from api.live.applied import AppliedOffsets
from api.live.hub import MetricsTicker
from api.live.relay import ChangeRelay, FeedTotals
from api.webhooks.delivery import WebhookDelivery
from api.workers.control import StatusSource, WorkerRoster, install_control
from api.workers.supervisor import HttpProcesses
from flux.config import Settings
from flux.kafka.compacted_log import CompactedLog
from flux.kafka.idempotency import IdempotencyLog
from flux.kafka.namespace_log import NamespaceLog
from flux.kafka.publisher import EventPublisher
from flux.kafka.security import client_options
from flux.kafka.source_router import SourceRouter
from flux.kafka.webhook_log import WebhookLog
from flux.lifecycle import Service, Services
from flux.logs import logging_config
from flux.metrics import Metrics
from flux.model.state import TableStatus

log = logging.getLogger(__name__)

REBUILD_CHECK_TIMEOUT_S = 15.0
CRASH_EXIT_S = 10.0  # a crashed worker's process is gone within this, however its stop goes
LINGER_S = 5.0  # how long threads other than daemons may outlive the worker before the process leaves anyway


class NodeServices(mode.Service):
    """Everything a node runs beside the Faust worker, started after it in order and stopped in reverse.

    Start: the publisher, the shared compacted logs (namespaces, idempotency keys), the change
    relay (when this process serves WebSockets); then the metrics ticker, the background watches
    (stall watch, fence, standby tailer) and last the HTTP side: the HTTP server on ``FLUX_PORT``,
    or the app on the control socket and then the HTTP processes. Stop, through one
    :class:`flux.lifecycle.Services` owner: the HTTP side first (no new requests), then the watches
    and the ticker, the jobs (history rebuilds, replays) and the HTTP clients to other nodes, the
    relay, the logs, and the publisher last.
    """

    def __init__(
        self,
        publisher: EventPublisher,
        logs: list[CompactedLog],
        relay: ChangeRelay | None,
        jobs: list[HistoryRebuilder | ReplayJobs],
        clients: list[NodeCalls],
        background: list[Service],
        http: list[Service],
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self._first: list[Service] = [publisher, *logs, *([relay] if relay is not None else [])]
        self._jobs = jobs
        self._clients = clients
        self._then: list[Service] = [*background, *http]
        self._owner = Services()

    async def on_start(self) -> None:
        """Start every part in order (see the class docstring)."""
        await self._owner.start(*self._first)
        for job in self._jobs:
            self._owner.close_on_stop(job.stop, type(job).__name__)
        for client in self._clients:
            self._owner.close_on_stop(client.close, type(client).__name__)
        await self._owner.start(*self._then)

    async def on_stop(self) -> None:
        """Stop every started part, the last started first."""
        await self._owner.stop()


def _exit_if_stuck(timeout_s: float, code: int, why: str) -> None:
    """Force the process out with ``code`` if it is still here ``timeout_s`` from now (``why`` it is going).

    Nothing acknowledged is at risk: published events are in Kafka, and events whose offsets were
    not committed are folded again (idempotently) on the next start.
    """

    def force_exit() -> None:
        log.error("%s: the worker did not stop within %.0f s (is the broker reachable?); exiting", why, timeout_s)
        logging.shutdown()
        os._exit(code)

    timer = threading.Timer(timeout_s, force_exit)
    timer.daemon = True
    timer.start()


def _leave_process(code: int) -> int:
    """Return ``code`` once only daemon threads are left; force the exit if others linger.

    Faust's consumer runs in a non-daemon thread with its own event loop. If its worker stops
    without stopping that thread (a crash, a stop cut short), the thread keeps the process alive
    and, heartbeating, keeps this node's partitions in the consumer group although nothing folds
    them any more: the others would never take them over. So the process leaves: after
    :data:`LINGER_S`, with ``os._exit``, and the group hands its partitions on within
    ``FLUX_SESSION_TIMEOUT_S``.
    """
    deadline = time.monotonic() + LINGER_S
    others = [t for t in threading.enumerate() if t is not threading.main_thread() and not t.daemon]
    for thread in others:
        thread.join(max(0.0, deadline - time.monotonic()))
    lingering = [thread.name for thread in others if thread.is_alive()]
    if lingering:
        log.error("threads %s outlived the worker; leaving the process (exit code %d)", lingering, code)
        logging.shutdown()
        os._exit(code)
    return code


class _Worker(faust.Worker):
    """Faust's worker, whose process always ends once the worker stops.

    The first SIGINT/SIGTERM and any crash (a batch the reducer could not write, a fenced node, a
    crashed service) arm :func:`_exit_if_stuck`. After a crash, Faust's stop can hang for good
    (its fetcher waits on a consumer thread that is rejoining the group; the stream waits for the
    unacknowledged batch): the process exits with code 1 within :data:`CRASH_EXIT_S` whatever
    hangs, so that a supervisor (``flux cluster``, systemd, Kubernetes) restarts the node. A stop
    after a signal that takes longer than ``FLUX_SHUTDOWN_TIMEOUT_S`` exits with code 3.
    """

    def __init__(self, shutdown_timeout_s: float, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._shutdown_timeout_s = shutdown_timeout_s
        self._armed = False

    def _arm(self, timeout_s: float, code: int, why: str) -> None:
        if not self._armed:
            self._armed = True
            _exit_if_stuck(timeout_s, code, why)

    def _on_sigint(self) -> None:
        self._arm(self._shutdown_timeout_s, 3, "SIGINT")
        super()._on_sigint()

    def _on_sigterm(self) -> None:
        self._arm(self._shutdown_timeout_s, 3, "SIGTERM")
        super()._on_sigterm()

    def _crash(self, reason: BaseException) -> None:
        if not self._armed:
            log.critical("the worker crashed (%r); the node stops and exits with code 1", reason)
        self._arm(min(self._shutdown_timeout_s, CRASH_EXIT_S), 1, f"crash ({reason!r})")
        super()._crash(reason)


def build_node(settings: Settings) -> tuple[faust.App, NodeServices]:
    """The Faust app with its reducer agent, and the services beside it (HTTP included) reading its table."""
    app, events_topic, table = create_faust_app(settings)
    metrics = Metrics()
    publisher = EventPublisher(
        settings, transactional_id=f"{settings.app_id}-publisher-{settings.node_id}-{settings.port}"
    )
    store = EntityStore(
        app,
        table,
        settings.partitions,
        broker_check=publisher.broker_reachable,
        read_committed=lambda partitions: committed_offsets(settings, partitions),
    )
    feed = ChangeFeed(app, settings.changes_topic)
    fence = MembershipFence(
        app,
        settings.kafka_bootstrap_servers,
        settings.app_id,
        settings.session_timeout_s,
        settings.heartbeat_interval_s,
        **client_options(settings),
    )
    reducer = BatchReducer(app, store, feed, settings, metrics, fence)
    install_reducer(app, events_topic, reducer, settings.flush_interval_ms / 1000)
    replays = ReplayJobs(settings, store, reducer, feed)

    rebuilder = HistoryRebuilder(settings, store)

    standby = StandbyTailer(settings, store, table.changelog_topic.get_topic_name())

    async def _after_rebalance(sender: Any, **_: Any) -> None:
        store.on_rebalance()
        standby.on_rebalance()
        try:  # Faust awaits this before it declares recovery done: never let it fail or hang
            await asyncio.wait_for(rebuilder.check(store.active_partitions()), REBUILD_CHECK_TIMEOUT_S)
        except Exception:
            log.exception("could not check whether partitions need their history rebuilt")

    app.on_rebalance_complete.connect(_after_rebalance)  # type: ignore[arg-type]

    applied = AppliedOffsets()
    totals = FeedTotals()
    namespaces = NamespaceLog(settings)
    history = HistoryStore(store, settings.partitions, rebuilder)
    idempotency = IdempotencyLog(settings)
    http_app = create_app(settings, publisher, store, metrics, applied, namespaces, history, idempotency, replays)
    node = app_node(http_app)

    async def _check_node_calls(sender: Any, **_: Any) -> None:
        try:  # several nodes, auth on, no FLUX_CLUSTER_SECRET: say once that tokens travel unprotected
            node.calls.warn_if_unprotected(settings.auth_enabled, store.owners())
        except Exception:
            log.exception("could not check how calls to other nodes are protected")

    app.on_rebalance_complete.connect(_check_node_calls)  # type: ignore[arg-type]
    watches: list[Service] = [
        StallWatch(app, settings, store, metrics, reducer.paused()),
        fence,
        standby,
        AppliedLagWatch(settings, store, metrics),
    ]
    watches.append(SourceRouter(settings, metrics))  # FLUX_SOURCE_TOPICS to the events topic; idle when unset
    # Webhooks (docs/webhooks.md): the registrations log (the routes of this process read it too), then the
    # deliveries, one runner per webhook; started in this order after the other logs, stopped in reverse.
    webhooks = WebhookLog(settings)
    http_app.state.webhooks = webhooks
    watches.extend([webhooks, WebhookDelivery(settings, webhooks, namespaces)])
    processes = settings.http_process_count()
    if processes == 0:  # one process: this one serves HTTP and WebSockets too
        relay = ChangeRelay(settings, applied, totals)
        relay.listen(node.hub.on_record)
        relay.listen(metrics.relayed)  # flux_relay_latency_ms, flux_relay_lag_records (as an HTTP process does)
        metrics.relay_lag = relay.lag
        http: list[Service] = [HttpServer(settings, http_app)]
        return app, NodeServices(
            publisher,
            [namespaces, idempotency],
            relay,
            [rebuilder, replays],
            [node.calls],
            [MetricsTicker(node.hub, totals), *watches],
            http,
        )
    return app, NodeServices(
        publisher,
        [namespaces],  # the keyed publishes are the HTTP processes': only they keep the answers in memory
        None,
        [rebuilder, replays],
        [node.calls],
        watches,
        _http_processes(settings, app, store, rebuilder, metrics, http_app, processes),
    )


UNIX_SOCKET_PATH_MAX = 100  # sun_path holds 108 bytes on Linux


def _runtime_dir(settings: Settings) -> Path:
    """Where the control socket and the applied board live: ``FLUX_DATA_DIR/run``, emptied, or a
    new temporary directory when that path is too long for a Unix socket."""
    runtime = (settings.data_dir / "run").absolute()
    if len(str(runtime / "reducer.sock")) > UNIX_SOCKET_PATH_MAX:
        return Path(tempfile.mkdtemp(prefix="flux-"))
    shutil.rmtree(runtime, ignore_errors=True)
    runtime.mkdir(parents=True)
    return runtime


def _http_processes(
    settings: Settings,
    app: faust.App,
    store: EntityStore,
    rebuilder: HistoryRebuilder,
    metrics: Metrics,
    http_app: Any,
    count: int,
) -> list[Service]:
    """The reducer's app on its control socket, and ``count`` HTTP processes on ``FLUX_PORT``
    reading its table (see :mod:`api.workers`)."""
    runtime = _runtime_dir(settings)
    control_socket = runtime / "reducer.sock"
    board_path = runtime / "applied.board"
    store.board = AppliedBoard.create(board_path, settings.partitions)

    paths: dict[int, str] = {}

    def table_status() -> TableStatus:
        recovered = store.recovered()
        active = store.active_partitions()
        for partition in active:
            if partition not in paths:
                paths[partition] = os.path.abspath(store.partition_path(partition))
        return TableStatus(
            recovered=recovered,
            active=active,
            owners=store.owners(),
            paths={p: paths[p] for p in active},
            rebuilding=dict(rebuilder.progress),
            entities=store.count(),
            generation=store.rebalances,
        )

    roster = WorkerRoster(metrics)
    install_control(http_app, roster, StatusSource(table_status, store.readiness))

    def crash(reason: BaseException) -> None:
        app.loop.create_task(app.crash(reason))

    class _Runtime:
        """Removes the control socket's directory once the HTTP side stopped."""

        async def start(self) -> None:
            """Nothing to start: the directory exists."""

        async def stop(self) -> None:
            """Remove the directory."""
            shutil.rmtree(runtime, ignore_errors=True)

    return [
        _Runtime(),
        HttpServer(settings, http_app, uds=str(control_socket)),
        HttpProcesses(settings, count, control_socket, board_path, roster, crash),
    ]


def run_node(settings: Settings) -> int:
    """Run one Flux node in the foreground until SIGINT/SIGTERM (exit code 0) or a crash (1)."""
    app, services = build_node(settings)
    root_level = quiet_logging(settings.log_level, settings.faust_log_level)
    handler_level = min(logging.INFO, logging.getLevelName(root_level)) if settings.access_log else root_level
    worker = _Worker(
        settings.shutdown_timeout_s,
        app,
        services,
        loglevel=handler_level,
        logging_config=logging_config(settings.log_format, settings.node_id, root_level, settings.access_log),
        quiet=True,
        redirect_stdouts=False,
    )
    worker.spinner = None  # with a spinner, the worker lowers the root logger to DEBUG
    try:
        worker.execute_from_commandline()
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    else:
        code = 0
    return _leave_process(code)
