"""The Kafka security options of the settings: their allowed values, and the combinations that can work.

:mod:`flux.config` declares its ``FLUX_KAFKA_*`` security fields with these types and checks them
with :func:`check`; :mod:`flux.kafka.security` turns them into client options. Both depend on this
module and neither on the other: the functions here take any object with the security fields
(:class:`KafkaSecurityOptions`), which the settings are.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, Protocol

from pydantic import BeforeValidator, SecretStr


def _upper(value: object) -> object:
    return value.strip().upper() if isinstance(value, str) else value


SecurityProtocol = Annotated[Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"], BeforeValidator(_upper)]
SaslMechanism = Annotated[Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"], BeforeValidator(_upper)]

TLS_PROTOCOLS = ("SSL", "SASL_SSL")
SASL_PROTOCOLS = ("SASL_PLAINTEXT", "SASL_SSL")


class KafkaSecurityOptions(Protocol):
    """The security fields of the settings (``FLUX_KAFKA_SECURITY_PROTOCOL`` and the rest)."""

    @property
    def kafka_security_protocol(self) -> str:
        """``PLAINTEXT``, ``SSL``, ``SASL_PLAINTEXT`` or ``SASL_SSL``."""

    @property
    def kafka_sasl_mechanism(self) -> str:
        """``PLAIN``, ``SCRAM-SHA-256`` or ``SCRAM-SHA-512``."""

    @property
    def kafka_sasl_username(self) -> str | None:
        """The SASL user name."""

    @property
    def kafka_sasl_password(self) -> SecretStr | None:
        """The SASL password."""

    @property
    def kafka_ssl_cafile(self) -> Path | None:
        """The CA certificates (PEM) the brokers' certificates are checked against."""

    @property
    def kafka_ssl_certfile(self) -> Path | None:
        """The client certificate (PEM)."""

    @property
    def kafka_ssl_keyfile(self) -> Path | None:
        """The client certificate's private key (PEM)."""

    @property
    def kafka_ssl_check_hostname(self) -> bool:
        """Whether the broker's certificate must name the host connected to."""


class KafkaSecurityError(ValueError):
    """The Kafka security settings contradict each other or miss something."""


def uses_tls(options: KafkaSecurityOptions) -> bool:
    """Whether the connection to the brokers is encrypted (SSL or SASL_SSL).

    Flux then runs its processes on asyncio's own event loop, not uvloop: uvloop's TLS transport
    may take its 30 s shutdown timeout to close a connection whose response is still on its way
    (MagicStack/uvloop#471, seen here on consumers stopped during a fetch), and every Kafka
    client's stop waits for its connections to close; a node's shutdown then ran out of time.
    """
    return options.kafka_security_protocol in TLS_PROTOCOLS


def uses_sasl(options: KafkaSecurityOptions) -> bool:
    """Whether the client authenticates with a user name and password (SASL_PLAINTEXT or SASL_SSL)."""
    return options.kafka_security_protocol in SASL_PROTOCOLS


def password(options: KafkaSecurityOptions) -> str | None:
    """The SASL password in clear, or None."""
    secret = options.kafka_sasl_password
    return secret.get_secret_value() if secret is not None else None


def check(options: KafkaSecurityOptions) -> None:
    """Raise :class:`KafkaSecurityError` when the options cannot make a working connection.

    SASL needs a user name and a password; credentials or certificate files given for a protocol
    that would not use them are refused rather than silently ignored (the usual cause is a
    forgotten ``FLUX_KAFKA_SECURITY_PROTOCOL``).
    """
    protocol = options.kafka_security_protocol
    where = f"FLUX_KAFKA_SECURITY_PROTOCOL={protocol}"
    if uses_sasl(options):
        missing = [
            name
            for name, value in (
                ("FLUX_KAFKA_SASL_USERNAME", options.kafka_sasl_username),
                ("FLUX_KAFKA_SASL_PASSWORD", password(options)),
            )
            if not value
        ]
        if missing:
            raise KafkaSecurityError(f"{where} needs {' and '.join(missing)}")
    else:
        given = [
            name
            for name, value in (
                ("FLUX_KAFKA_SASL_USERNAME", options.kafka_sasl_username),
                ("FLUX_KAFKA_SASL_PASSWORD", options.kafka_sasl_password),
            )
            if value is not None
        ]
        if given:
            raise KafkaSecurityError(
                f"{' and '.join(given)} set, but {where} does not authenticate with SASL: "
                "set FLUX_KAFKA_SECURITY_PROTOCOL=SASL_SSL (or SASL_PLAINTEXT)"
            )
    files = {
        "FLUX_KAFKA_SSL_CAFILE": options.kafka_ssl_cafile,
        "FLUX_KAFKA_SSL_CERTFILE": options.kafka_ssl_certfile,
        "FLUX_KAFKA_SSL_KEYFILE": options.kafka_ssl_keyfile,
    }
    if not uses_tls(options) and any(files.values()):
        named = ", ".join(name for name, path in files.items() if path)
        raise KafkaSecurityError(
            f"{named} set, but {where} does not use TLS: set FLUX_KAFKA_SECURITY_PROTOCOL=SSL (or SASL_SSL)"
        )
    if options.kafka_ssl_keyfile and not options.kafka_ssl_certfile:
        raise KafkaSecurityError("FLUX_KAFKA_SSL_KEYFILE needs FLUX_KAFKA_SSL_CERTFILE (the client certificate)")
