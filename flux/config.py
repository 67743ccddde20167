"""Settings read from environment variables (pydantic-settings); every one is listed in the README."""

from __future__ import annotations

import socket
from functools import lru_cache
from pathlib import Path
from typing import Self

from pydantic import AliasChoices, Field, FilePath, SecretStr, model_validator
from pydantic_core import PydanticCustomError
from pydantic_settings import BaseSettings, SettingsConfigDict

from flux.events import EventLimits
from flux.kafka_options import KafkaSecurityError, SaslMechanism, SecurityProtocol, check

MIN_ADMIN_TOKEN_LENGTH = 32


class Settings(BaseSettings):
    """Flux configuration. Variables are ``FLUX_<NAME>`` except ``KAFKA_BOOTSTRAP_SERVERS``."""

    model_config = SettingsConfigDict(env_prefix="FLUX_", extra="ignore")

    url: str = "http://localhost:3000"
    host: str = "127.0.0.1"
    port: int = 3000
    advertised_url: str | None = None  # how other nodes reach this one; default http://host:port
    forward_timeout_s: float = Field(default=10.0, gt=0)
    rebalance_wait_s: float = Field(default=5.0, ge=0)  # how long a read waits for moving partitions before 503
    auth_enabled: bool = False
    admin_token: str | None = None
    public_reads: bool = True
    rate_limit_per_minute: int = Field(default=10_000, ge=1)
    log_level: str = "WARNING"
    faust_log_level: str = "WARNING"  # Faust's and mode's own loggers (INFO shows rebalances and recovery)

    kafka_bootstrap_servers: str = Field(
        default="127.0.0.1:9092",
        validation_alias=AliasChoices("KAFKA_BOOTSTRAP_SERVERS", "FLUX_KAFKA_BOOTSTRAP_SERVERS"),
    )
    # How the clients authenticate (flux/kafka_security.py; combinations are checked there).
    kafka_security_protocol: SecurityProtocol = "PLAINTEXT"
    kafka_sasl_mechanism: SaslMechanism = "PLAIN"
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_cafile: FilePath | None = None
    kafka_ssl_certfile: FilePath | None = None  # client certificate (PEM), for brokers that require one
    kafka_ssl_keyfile: FilePath | None = None  # its private key, unless the certificate file holds it
    kafka_ssl_check_hostname: bool = True
    app_id: str = "flux"
    node_id: str = Field(default_factory=lambda: socket.gethostname())
    data_dir: Path = Path(".flux/data")
    events_topic: str = "flux.events"
    dead_letter_topic: str = "flux.events.dlq"
    changes_topic: str = "flux.changes"
    namespaces_topic: str = "flux.namespaces"
    idempotency_topic: str = "flux.idempotency"
    idempotency_ttl_s: int = Field(default=86_400, ge=1)
    changes_retention_ms: int = Field(default=3_600_000, ge=60_000)
    partitions: int = Field(default=8, ge=1, le=1024)
    replay_workers: int = Field(default=0, ge=0, le=64)  # processes folding a replay; 0: one per CPU core
    replication_factor: int = Field(default=1, ge=1)
    standby_replicas: int = Field(default=1, ge=0)  # nodes that keep a warm copy of each partition's table
    events_retention_ms: int = -1
    session_timeout_s: float = Field(default=6.0, gt=0)  # the least brokers accept by default: quick failovers
    heartbeat_interval_s: float = Field(default=1.0, gt=0)

    max_event_bytes: int = 1_048_576
    max_batch_bytes: int = 10_485_760
    max_batch_events: int = 100_000
    max_entity_id_length: int = 512
    max_properties_per_event: int = Field(default=1_000, ge=1)
    max_property_key_length: int = Field(default=256, ge=1)
    publish_timeout_ms: int = 30_000
    shutdown_timeout_s: float = Field(default=20.0, gt=0)

    rocksdb_block_cache_mb: int = Field(default=64, ge=1)
    rocksdb_write_buffer_mb: int = Field(default=16, ge=1)

    flush_interval_ms: int = Field(default=5, ge=1)

    delete_batch_limit: int = Field(default=10_000, ge=1)
    wait_timeout_ms: int = Field(default=5_000, ge=1)
    wait_max_timeout_ms: int = Field(default=60_000, ge=1)

    ws_queue_limit: int = Field(default=10_000, ge=1)
    ws_snapshot_limit: int = Field(default=10_000, ge=0)
    ws_metrics_interval_s: float = Field(default=2.0, gt=0)
    ws_max_subscriptions: int = Field(default=1_000, ge=1)

    list_default_limit: int = Field(default=1000, ge=1)
    list_max_limit: int = Field(default=10_000, ge=1)

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
    def _kafka_security_works(self) -> Self:
        """The Kafka security options must make a working connection (:func:`flux.kafka_options.check`)."""
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

    def event_limits(self) -> EventLimits:
        """The per-event size limits."""
        return EventLimits(self.max_entity_id_length, self.max_properties_per_event, self.max_property_key_length)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings()
