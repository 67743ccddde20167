"""The Faust app of a Flux node: configuration, the events topic and the entity table."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import faust

from agents.table.restore import RestoringTable
from agents.transport import ReadCommittedTransport
from flux.config import Settings
from flux.kafka.security import faust_credentials
from flux.kafka.topics import MAX_MESSAGE_BYTES, TABLE_NAME


class FluxTable(RestoringTable, faust.Table[bytes, bytes]):
    """Faust's table, restored from its changelog at raw consumer speed after a rebalance."""


class FluxApp(faust.App):
    """A Faust app whose consumer reads only committed records and commits no source offset before
    ``commit_guard`` says the changelog holds what was folded (see :mod:`agents.transport`)."""

    commit_guard: Callable[[], Awaitable[bool]] | None = None  # set by agents.table.store.EntityStore

    def _new_transport(self) -> Any:
        return ReadCommittedTransport(self.conf.broker_consumer, self)


def broker_urls(bootstrap_servers: str) -> list[str]:
    """Faust broker URLs from a Kafka ``host:port,host:port`` list."""
    return [f"kafka://{server.strip()}" for server in bootstrap_servers.split(",") if server.strip()]


def _numeric(level: str) -> int:
    value = logging.getLevelName(level.upper())
    return value if isinstance(value, int) else logging.WARNING


def quiet_logging(level: str, faust_level: str = "WARNING") -> str:
    """Set the loggers' levels and return the level the worker's log handler needs.

    Flux's own loggers log at ``level``; Faust and mode at ``faust_level``, down to INFO
    (rebalances, recovery), never DEBUG; aiokafka at WARNING or above: their debug paths cost CPU
    on every send.
    """
    for name in ("flux", "agents", "api", "uvicorn"):
        logging.getLogger(name).setLevel(_numeric(level))
    for name in ("aiokafka", "kafka", "rocksdict"):
        logging.getLogger(name).setLevel(max(logging.WARNING, _numeric(level)))
    faust = max(logging.INFO, _numeric(faust_level))
    for name in ("faust", "mode"):
        logging.getLogger(name).setLevel(faust)
    return logging.getLevelName(min(_numeric(level), faust))


def create_faust_app(settings: Settings) -> tuple[FluxApp, Any, Any]:
    """The app, its events topic and its entity table, configured from ``settings``."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    app = FluxApp(
        settings.app_id,
        broker=broker_urls(settings.kafka_bootstrap_servers),
        broker_credentials=faust_credentials(settings),
        store="rocksdb://",
        Table=FluxTable,
        datadir=str(settings.data_dir),
        web_enabled=False,
        canonical_url=settings.node_url(),  # what the group's assignment says serves a partition
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        topic_allow_declare=True,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        producer_max_request_size=16 * 1024 * 1024,
        broker_commit_interval=1.0,
        broker_session_timeout=settings.session_timeout_s,
        broker_heartbeat_interval=settings.heartbeat_interval_s,
        stream_buffer_maxsize=16384,
        table_standby_replicas=0,  # agents.table.standby keeps the warm copies, at raw consumer speed
        autodiscover=False,
        loghandlers=[],
    )
    events_topic = app.topic(
        settings.events_topic,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
        partitions=settings.partitions,
    )
    table = app.Table(
        TABLE_NAME,
        partitions=settings.partitions,
        # key_type/value_type decide the changelog topic's serializers (bytes -> raw); without them
        # recovery JSON-decodes the keys and Faust skips what it cannot decode.
        key_type=bytes,
        value_type=bytes,
        schema=faust.Schema(key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw"),
        recovery_buffer_size=10_000,
        extra_topic_configs={"max.message.bytes": str(MAX_MESSAGE_BYTES)},
        # Faust's defaults give every partition DB a 2 GiB block cache and 3 x 64 MiB memtables.
        options={
            "block_cache_size": settings.rocksdb_block_cache_mb * 1024 * 1024,
            "write_buffer_size": settings.rocksdb_write_buffer_mb * 1024 * 1024,
        },
        help="Entity state keyed by entity id (JSON with per-property versions)",
    )
    table.restore_settings = settings  # type: ignore[attr-defined]
    return app, events_topic, table
