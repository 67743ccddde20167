"""Settings read from environment variables (pydantic-settings); docs/configuration.md lists them (flux.config_doc)."""

from __future__ import annotations

import os
import socket
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal, Self

from pydantic import AliasChoices, Field, FilePath, SecretStr, model_validator
from pydantic_core import PydanticCustomError
from pydantic_settings import BaseSettings, SettingsConfigDict

from flux.kafka.options import KafkaSecurityError, SaslMechanism, SecurityProtocol, check
from flux.model.entity_limits import EntityLimits
from flux.model.events import EventLimits
from flux.model.sources import InvalidSourceTopics, SourceTopic, parse_source_topics
from flux.origins import InvalidOrigin, parse_allowed

MIN_ADMIN_TOKEN_LENGTH = 32
MAX_ENTITY_BYTES_CEILING = 4 * 1024 * 1024  # half the changelog topic's max.message.bytes (flux.kafka.topics)


class Settings(BaseSettings):
    """Flux configuration. Variables are ``FLUX_<NAME>`` except ``KAFKA_BOOTSTRAP_SERVERS``."""

    model_config = SettingsConfigDict(env_prefix="FLUX_", extra="ignore")

    url: str = Field(
        default="http://localhost:3000",
        description="Where clients (`flux backfill`, `flux replay`) reach Flux; the server itself does not read it",
    )
    host: str = Field(default="127.0.0.1", description="HTTP bind address (`0.0.0.0` to listen on all interfaces)")
    port: int = Field(default=3000, description="HTTP port")
    http_processes: int | None = Field(
        default=None,
        ge=0,
        le=64,
        description="HTTP processes serving `FLUX_PORT` beside the reducer process; unset: one per CPU core, "
        "at most 4; `0`: the reducer process serves HTTP itself (one process, the fold shares its CPU with requests)",
    )
    http_process_niceness: int = Field(
        default=5,
        ge=0,
        le=19,
        description="How much lower the HTTP processes' CPU priority is than the reducer process's (`nice`): "
        "under more requests than the machine can take, the fold keeps its CPU and state stays current",
    )
    advertised_url: str | None = Field(
        default=None,
        description="How the other nodes reach this one (forwarded reads); unset: `http://FLUX_HOST:FLUX_PORT`, "
        "with this machine's host name for a wildcard host",
    )
    forward_timeout_s: float = Field(
        default=10.0,
        gt=0,
        description="Seconds a read forwarded to another node (or its share of a gathered read) may take",
    )
    cluster_secret: SecretStr | None = Field(
        default=None,
        description=f"A shared secret of at least {MIN_ADMIN_TOKEN_LENGTH} characters, the same on every node of an "
        "app: node-to-node calls show it, the internal endpoints answer only them, and the admin token is never sent "
        "to another node; unset, callers' tokens (the admin's too) travel to the other nodes as they came (see "
        "docs/cluster.md)",
    )
    rebalance_wait_s: float = Field(
        default=5.0, ge=0, description="Seconds a read waits for moving partitions to be served again before `503`"
    )
    auth_enabled: bool = Field(default=False, description="Namespaces and bearer tokens (see docs/security.md)")
    admin_token: str | None = Field(
        default=None,
        description=f"The admin token; required, of at least {MIN_ADMIN_TOKEN_LENGTH} characters, when "
        "`FLUX_AUTH_ENABLED=true` (`flux serve` refuses to start otherwise)",
    )
    public_reads: bool = Field(
        default=True,
        description="With auth on, `false` makes reads and WebSocket subscriptions need a token of the namespace",
    )
    rate_limit_per_minute: int = Field(
        default=10_000, ge=1, description="Events per minute per namespace and per process, with auth on (429 beyond)"
    )
    log_level: str = Field(
        default="WARNING", description="Log level (Faust, mode and aiokafka stay at WARNING or above)"
    )
    log_format: Literal["text", "json"] = Field(
        default="text",
        description="`text` (Flux's log lines) or `json`: one JSON object per line, with time, level, logger, "
        "message, node and the HTTP request's id (see docs/operations.md, Logs)",
    )
    access_log: bool = Field(
        default=False, description="A log line per HTTP request (method, path, status, client), at INFO"
    )
    otel_enabled: bool = Field(
        default=False,
        description="OpenTelemetry tracing: a `flux.publish` span per publish and a `flux.fold` span per folded "
        "batch and partition, linked to them, exported as the standard `OTEL_*` variables say (needs "
        "`pip install flux-state[otel]`; see docs/operations.md, Tracing)",
    )
    faust_log_level: str = Field(
        default="WARNING",
        description="Faust's and mode's own log level, down to `INFO` (rebalances, recovery; the tests use it)",
    )

    kafka_bootstrap_servers: str = Field(
        default="127.0.0.1:9092",
        validation_alias=AliasChoices("KAFKA_BOOTSTRAP_SERVERS", "FLUX_KAFKA_BOOTSTRAP_SERVERS"),
        description="Kafka bootstrap servers, `host:port[,host:port]`; unset, `make run` / `flux serve` start the "
        "local broker on this address (also read as `FLUX_KAFKA_BOOTSTRAP_SERVERS`)",
    )
    kafka_security_protocol: SecurityProtocol = Field(
        default="PLAINTEXT",
        description="`PLAINTEXT`, `SSL`, `SASL_PLAINTEXT` or `SASL_SSL`, in any case (see docs/kafka.md, Secured and "
        "managed Kafka); combinations that cannot work are refused at start",
    )
    kafka_sasl_mechanism: SaslMechanism = Field(
        default="PLAIN", description="With SASL: `PLAIN`, `SCRAM-SHA-256` or `SCRAM-SHA-512`, in any case"
    )
    kafka_sasl_username: str | None = Field(
        default=None,
        description="SASL user (an API key on Confluent Cloud); required with SASL, refused without",
    )
    kafka_sasl_password: SecretStr | None = Field(
        default=None, description="SASL password (API secret); required with SASL, refused without; never printed"
    )
    kafka_ssl_cafile: FilePath | None = Field(
        default=None,
        description="With TLS: the CA certificate(s), PEM, that signed the brokers' certificates; unset: the "
        "system's CA certificates. An existing file; refused without TLS",
    )
    kafka_ssl_certfile: FilePath | None = Field(
        default=None,
        description="With TLS: a client certificate (PEM), for brokers that require one. An existing file",
    )
    kafka_ssl_keyfile: FilePath | None = Field(
        default=None,
        description="The client certificate's private key (PEM, unencrypted), unless the certificate file holds "
        "it; needs `FLUX_KAFKA_SSL_CERTFILE`",
    )
    kafka_ssl_check_hostname: bool = Field(
        default=True, description="With TLS: check that the broker's certificate names the host connected to"
    )
    app_id: str = Field(default="flux", description="Faust app id: the consumer group and the changelog topic's prefix")
    node_id: str = Field(
        default_factory=lambda: socket.gethostname(),
        json_schema_extra={"default_doc": "the host name"},  # shown by flux.config_doc
        description="This node's name (part of its transactional producer id)",
    )
    data_dir: Path = Field(default=Path(".flux/data"), description="Where the RocksDB stores live")
    events_topic: str = Field(default="flux.events", description="The events topic")
    dead_letter_topic: str = Field(default="flux.events.dlq", description="Invalid records, with the reason")
    source_topics: str = Field(
        default="",
        description="Other topics whose records the node folds too, comma-separated, each "
        "`topic:format[:stream[:source]]`; format `flux` (envelopes, as on the events topic), `upsert` (key = entity "
        "id, value = a JSON object of properties, a null value deletes) or `connect-json` (Kafka Connect's "
        "JsonConverter with `schemas.enable=true`); stream and source default to the record's `stream` and `source` "
        "headers, else the topic name and `kafka:<topic>`. Created when missing; read by the consumer group "
        "`FLUX_APP_ID-sources` and republished to the events topic (see docs/kafka.md, Source topics)",
    )
    changes_topic: str = Field(
        default="flux.changes", description="The change-feed topic (same partition count as the events topic)"
    )
    namespaces_topic: str = Field(
        default="flux.namespaces", description="The compacted topic of namespaces and token hashes"
    )
    idempotency_topic: str = Field(
        default="flux.idempotency",
        description="The compacted topic of keyed answers (retention: the TTL plus an hour)",
    )
    webhooks_topic: str = Field(
        default="flux.webhooks",
        description="The compacted topic of webhook registrations, pauses and delivery reports (holds their secrets)",
    )
    idempotency_ttl_s: int = Field(
        default=86_400,
        ge=1,
        description="Seconds an `X-Idempotency-Key` answer is replayed; a key used again later is a new request "
        "(its events get new eventIds)",
    )
    idempotency_cache_keys: int = Field(
        default=100_000,
        ge=1,
        description="Most `X-Idempotency-Key` answers each process of a node keeps in memory (the oldest are "
        "forgotten first, before their TTL when more keys come in; see docs/api.md, Idempotent retries)",
    )
    idempotency_cache_bytes: int = Field(
        default=64 * 1024 * 1024,
        ge=1_048_576,
        description="Most bytes of `X-Idempotency-Key` answers each process of a node keeps in memory (about 600 "
        "bytes a key, more for a batch answer with failed events; the oldest are forgotten first)",
    )
    changes_retention_ms: int = Field(
        default=3_600_000, ge=60_000, description="Retention of the change feed, in milliseconds"
    )
    partitions: int = Field(
        default=8,
        ge=1,
        le=1024,
        description="Partitions of the events topic, the change feed and the table: the most nodes that fold in "
        "parallel; must match existing topics (checked at start)",
    )
    replay_workers: int = Field(
        default=0,
        ge=0,
        le=64,
        description="Processes that fold a replay; `0`: one per CPU core (at most one per partition)",
    )
    replication_factor: int = Field(
        default=1,
        ge=1,
        description="Replication factor of the topics Flux creates (`3` under `make cluster`); an existing topic "
        "with fewer replicas is logged as a warning",
    )
    standby_replicas: int = Field(
        default=1, ge=0, description="How many other nodes keep a warm copy of each partition's table"
    )
    events_retention_ms: int = Field(
        default=-1, description="Retention of the events topic, in milliseconds (`-1`: forever)"
    )
    session_timeout_s: float = Field(
        default=6.0,
        gt=0,
        description="Consumer group session timeout in seconds: a crashed node's partitions move this long after "
        "its last heartbeat (brokers refuse less than their `group.min.session.timeout.ms`, 6 s by default)",
    )
    heartbeat_interval_s: float = Field(default=1.0, gt=0, description="Consumer group heartbeat interval, in seconds")

    max_event_bytes: int = Field(default=1_048_576, description="Largest body of `POST /api/events` (413 beyond)")
    max_batch_bytes: int = Field(
        default=10_485_760, description="Largest body of `POST /api/events/batch` (413 beyond)"
    )
    max_batch_events: int = Field(default=100_000, description="Most events in one batch (413 beyond)")
    max_entity_id_length: int = Field(default=512, description="Longest entity id, in characters (400 beyond)")
    max_properties_per_event: int = Field(default=1_000, ge=1, description="Most properties in one event (400 beyond)")
    max_property_key_length: int = Field(
        default=256, ge=1, description="Longest property name, in characters (400 beyond)"
    )
    max_stream_source_length: int = Field(
        default=256, ge=1, description="Longest `stream` and longest `source` of an event, in characters (400 beyond)"
    )
    max_entity_bytes: int = Field(
        default=1_048_576,
        ge=1_024,
        le=MAX_ENTITY_BYTES_CEILING,
        description="Largest state of one entity, in bytes of its stored JSON: an event that would make an entity "
        "larger is not applied and goes to the dead-letter topic with the reason; one that alone would is refused "
        f"at publish (413). At most {MAX_ENTITY_BYTES_CEILING:,}: half the table changelog's `max.message.bytes` "
        "(see docs/api.md, Limits)",
    )
    max_entity_properties: int = Field(
        default=10_000,
        ge=1,
        description="Most properties of one entity: an event that would give an entity more is not applied and goes "
        "to the dead-letter topic with the reason; one that alone has more is refused at publish (413)",
    )
    publish_timeout_ms: int = Field(
        default=30_000, description="Milliseconds a publish waits for the broker before answering 503"
    )
    shutdown_timeout_s: float = Field(
        default=20.0,
        gt=0,
        description="After SIGINT/SIGTERM, exit anyway after this many seconds (a stop waiting on an unreachable "
        "broker)",
    )

    rocksdb_block_cache_mb: int = Field(default=64, ge=1, description="RocksDB block cache per partition store, in MB")
    rocksdb_write_buffer_mb: int = Field(
        default=16, ge=1, description="RocksDB memtable size per partition store, in MB"
    )

    flush_interval_ms: int = Field(
        default=20,
        ge=1,
        description=(
            "Longest the reducer gathers records into one batch, in milliseconds; a batch is cut sooner "
            "once no record came for 1 ms, so an event arriving alone waits about 1 ms"
        ),
    )

    delete_batch_limit: int = Field(
        default=10_000,
        ge=1,
        description="Most entities one batch deletion may match (400 beyond, nothing deleted)",
    )
    wait_timeout_ms: int = Field(default=5_000, ge=1, description="Default `wait_timeout_ms` of `?wait=true`")
    wait_max_timeout_ms: int = Field(
        default=60_000, ge=1, description="Largest `wait_timeout_ms` accepted (422 beyond)"
    )

    ws_queue_limit: int = Field(
        default=10_000,
        ge=1,
        description="Messages a WebSocket client may have waiting before it is dropped (close code 1008)",
    )
    ws_snapshot_limit: int = Field(default=10_000, ge=0, description="Largest snapshot a subscribe may ask for")
    ws_metrics_interval_s: float = Field(default=2.0, gt=0, description="Period of `metrics_update`, in seconds")
    ws_max_subscriptions: int = Field(default=1_000, ge=1, description="Patterns per WebSocket connection")
    ws_queue_max_bytes: int = Field(
        default=4_194_304,
        ge=1_024,
        description="Bytes of messages (changes, snapshots and replies alike) a WebSocket client may have waiting "
        "before it is dropped (close code 1008); a snapshot waits for the client to read rather than exceed it",
    )
    ws_subscribe_per_second: float = Field(
        default=50.0,
        gt=0,
        description="Subscribes a WebSocket connection may send per second (as many at once); more get an `error`",
    )
    ws_max_message_bytes: int = Field(
        default=65_536,
        ge=1_024,
        description="Largest message a WebSocket client may send; a larger one closes the connection (code 1009)",
    )
    ws_allowed_origins: str = Field(
        default="",
        description="Comma-separated origins (`https://app.example.com`) of the web pages that may open `/api/ws` "
        "besides Flux's own; `*`: any. Other pages' handshakes are refused with `403`; clients that send no "
        "`Origin` (programs, not browsers) are always let in (see docs/websocket.md)",
    )

    webhook_allow_private: bool = Field(
        default=False,
        description="Whether webhook URLs may point at loopback, private, link-local or otherwise non-public "
        "addresses (checked on the resolved addresses at registration and at every delivery)",
    )
    webhook_max_failure_s: float = Field(
        default=3_600.0,
        gt=0,
        description="Seconds a webhook may keep failing (no 2xx answer) before it is paused; "
        "`POST /api/webhooks/{id}/resume` resumes it from where it stopped",
    )
    webhook_timeout_s: float = Field(default=10.0, gt=0, description="Seconds one webhook delivery (a POST) may take")
    webhook_retry_initial_s: float = Field(
        default=1.0, gt=0, description="First wait before a failed webhook delivery is retried (doubled each time)"
    )
    webhook_retry_max_s: float = Field(
        default=300.0, gt=0, description="Longest wait between two attempts of a webhook delivery"
    )
    webhook_batch_changes: int = Field(
        default=500, ge=1, le=10_000, description="Most changes (messages) one webhook delivery carries"
    )
    webhook_deliveries_kept: int = Field(
        default=50,
        ge=1,
        le=1_000,
        description="Recent delivery attempts each node keeps per webhook for `GET .../deliveries`",
    )

    list_default_limit: int = Field(
        default=1000, ge=1, description="Page size of `GET /api/state/entities` without `limit`"
    )
    list_max_limit: int = Field(default=10_000, ge=1, description="Largest `limit` accepted")
    list_max_offset: int = Field(
        default=10_000,
        ge=0,
        description="Largest `offset` of `GET /api/state/entities` (`422` beyond): an offset walks every entity "
        "before it, so deeper pages follow the `Link` header (`after=`), which costs the same at any depth",
    )
    list_at_max_events: int = Field(
        default=100_000,
        ge=1,
        description="History events one `GET /api/state/entities?at=` request folds at most on each node serving "
        "part of it (an entity examined counts one at least): past it the page ends early, with fewer entities "
        "than `limit` or none, and a `Link` that goes on from there (see docs/history-and-replay.md)",
    )

    @model_validator(mode="after")
    def _strong_admin_token(self) -> Self:
        """With auth on, the admin token must be long enough not to be guessed."""
        if self.auth_enabled and len(self.admin_token or "") < MIN_ADMIN_TOKEN_LENGTH:
            raise PydanticCustomError(
                "admin_token_too_short",
                "FLUX_AUTH_ENABLED=true needs FLUX_ADMIN_TOKEN of at least {min_length} characters "
                "(e.g. from `python -c 'import secrets; print(secrets.token_urlsafe(32))'`)",
                {"min_length": MIN_ADMIN_TOKEN_LENGTH},
            )
        return self

    @model_validator(mode="after")
    def _strong_cluster_secret(self) -> Self:
        """A cluster secret, when set, must be long enough not to be guessed."""
        if self.cluster_secret is not None and len(self.cluster_secret.get_secret_value()) < MIN_ADMIN_TOKEN_LENGTH:
            raise PydanticCustomError(
                "cluster_secret_too_short",
                "FLUX_CLUSTER_SECRET needs at least {min_length} characters when set",
                {"min_length": MIN_ADMIN_TOKEN_LENGTH},
            )
        return self

    @model_validator(mode="after")
    def _origins_are_origins(self) -> Self:
        """Every entry of FLUX_WS_ALLOWED_ORIGINS is an origin or ``*``."""
        try:
            parse_allowed(self.ws_allowed_origins)
        except InvalidOrigin as exc:
            raise PydanticCustomError(
                "ws_allowed_origins", "FLUX_WS_ALLOWED_ORIGINS: {reason}", {"reason": str(exc)}
            ) from None
        return self

    @model_validator(mode="after")
    def _source_topics_are_readable(self) -> Self:
        """FLUX_SOURCE_TOPICS parses, and names none of the topics Flux writes itself (it would loop)."""
        try:
            topics = self.sources()
        except InvalidSourceTopics as exc:
            raise PydanticCustomError("source_topics", "FLUX_SOURCE_TOPICS: {reason}", {"reason": str(exc)}) from None
        own = {self.events_topic, self.changes_topic, self.dead_letter_topic, self.namespaces_topic}
        own.update((self.idempotency_topic, self.webhooks_topic))
        for topic in topics:
            if topic.topic in own or topic.topic.startswith(f"{self.app_id}-"):
                raise PydanticCustomError(
                    "source_topics",
                    "FLUX_SOURCE_TOPICS: '{topic}' is one of Flux's own topics; list only topics others write",
                    {"topic": topic.topic},
                )
        return self

    @model_validator(mode="after")
    def _kafka_security_works(self) -> Self:
        """The Kafka security options must make a working connection (:func:`flux.kafka.options.check`)."""
        try:
            check(self)
        except KafkaSecurityError as exc:
            raise PydanticCustomError("kafka_security", "{reason}", {"reason": str(exc)}) from None
        return self

    def node_url(self) -> str:
        """The URL other nodes reach this node's HTTP API at (``FLUX_ADVERTISED_URL``)."""
        if self.advertised_url:
            return self.advertised_url.rstrip("/")
        host = socket.gethostname() if self.host in ("0.0.0.0", "::", "") else self.host
        return f"http://{host}:{self.port}"

    def http_process_count(self) -> int:
        """How many HTTP processes serve ``FLUX_PORT`` (0: the reducer process serves HTTP itself)."""
        if self.http_processes is not None:
            return self.http_processes
        return max(1, min(4, os.cpu_count() or 1))

    def ws_origins(self) -> frozenset[str]:
        """The origins of FLUX_WS_ALLOWED_ORIGINS, normalized (``*`` for any)."""
        return parse_allowed(self.ws_allowed_origins)

    def sources(self) -> list[SourceTopic]:
        """The source topics of FLUX_SOURCE_TOPICS (see :mod:`flux.model.sources`)."""
        return parse_source_topics(self.source_topics)

    def event_limits(self) -> EventLimits:
        """The per-event size limits."""
        return EventLimits(
            self.max_entity_id_length,
            self.max_properties_per_event,
            self.max_property_key_length,
            self.max_stream_source_length,
        )

    def entity_limits(self) -> EntityLimits:
        """The caps of one entity's stored state."""
        return EntityLimits(self.max_entity_bytes, self.max_entity_properties)

    def in_clear(self) -> dict[str, Any]:
        """The settings as JSON values with every secret in clear, for a child process to read back
        (``Settings(**settings.in_clear())``; ``model_dump`` masks each ``SecretStr`` as ``**********``)."""
        dumped = self.model_dump(mode="json")
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, SecretStr):
                dumped[name] = value.get_secret_value()
        return dumped


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings()
