"""How Flux authenticates to Kafka: the settings' security options as aiokafka and Faust take them.

Every Kafka client Flux creates takes ``**client_options(settings)``; the Faust app takes
``broker_credentials=faust_credentials(settings)``. Both build a fresh TLS context from the CA
file (and client certificate) for the SSL protocols. :func:`check` refuses combinations that
cannot work, naming the variables to change.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BeforeValidator

if TYPE_CHECKING:
    import ssl

    from faust.types.auth import CredentialsT

    from flux.config import Settings


def _upper(value: Any) -> Any:
    return value.strip().upper() if isinstance(value, str) else value


SecurityProtocol = Annotated[Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"], BeforeValidator(_upper)]
SaslMechanism = Annotated[Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"], BeforeValidator(_upper)]

TLS_PROTOCOLS = ("SSL", "SASL_SSL")
SASL_PROTOCOLS = ("SASL_PLAINTEXT", "SASL_SSL")


class KafkaSecurityError(ValueError):
    """The Kafka security settings contradict each other or miss something."""


def uses_tls(settings: Settings) -> bool:
    """Whether the connection to the brokers is encrypted (SSL or SASL_SSL).

    Flux then runs its processes on asyncio's own event loop, not uvloop: uvloop's TLS transport
    may take its 30 s shutdown timeout to close a connection whose response is still on its way
    (MagicStack/uvloop#471, seen here on consumers stopped during a fetch), and every Kafka
    client's stop waits for its connections to close; a node's shutdown then ran out of time.
    """
    return settings.kafka_security_protocol in TLS_PROTOCOLS


def uses_sasl(settings: Settings) -> bool:
    """Whether the client authenticates with a user name and password (SASL_PLAINTEXT or SASL_SSL)."""
    return settings.kafka_security_protocol in SASL_PROTOCOLS


def check(settings: Settings) -> None:
    """Raise :class:`KafkaSecurityError` when the settings cannot make a working connection.

    SASL needs a user name and a password; credentials or certificate files given for a protocol
    that would not use them are refused rather than silently ignored (the usual cause is a
    forgotten ``FLUX_KAFKA_SECURITY_PROTOCOL``).
    """
    protocol = settings.kafka_security_protocol
    where = f"FLUX_KAFKA_SECURITY_PROTOCOL={protocol}"
    if uses_sasl(settings):
        missing = [
            name
            for name, value in (
                ("FLUX_KAFKA_SASL_USERNAME", settings.kafka_sasl_username),
                ("FLUX_KAFKA_SASL_PASSWORD", _password(settings)),
            )
            if not value
        ]
        if missing:
            raise KafkaSecurityError(f"{where} needs {' and '.join(missing)}")
    else:
        given = [
            name
            for name, value in (
                ("FLUX_KAFKA_SASL_USERNAME", settings.kafka_sasl_username),
                ("FLUX_KAFKA_SASL_PASSWORD", settings.kafka_sasl_password),
            )
            if value is not None
        ]
        if given:
            raise KafkaSecurityError(
                f"{' and '.join(given)} set, but {where} does not authenticate with SASL: "
                "set FLUX_KAFKA_SECURITY_PROTOCOL=SASL_SSL (or SASL_PLAINTEXT)"
            )
    files = {
        "FLUX_KAFKA_SSL_CAFILE": settings.kafka_ssl_cafile,
        "FLUX_KAFKA_SSL_CERTFILE": settings.kafka_ssl_certfile,
        "FLUX_KAFKA_SSL_KEYFILE": settings.kafka_ssl_keyfile,
    }
    if not uses_tls(settings) and any(files.values()):
        named = ", ".join(name for name, path in files.items() if path)
        raise KafkaSecurityError(
            f"{named} set, but {where} does not use TLS: set FLUX_KAFKA_SECURITY_PROTOCOL=SSL (or SASL_SSL)"
        )
    if settings.kafka_ssl_keyfile and not settings.kafka_ssl_certfile:
        raise KafkaSecurityError("FLUX_KAFKA_SSL_KEYFILE needs FLUX_KAFKA_SSL_CERTFILE (the client certificate)")


def ssl_context(settings: Settings) -> ssl.SSLContext:
    """A client TLS context: the CA file (else the system's CAs), the client certificate if any."""
    from aiokafka.helpers import create_ssl_context

    context = create_ssl_context(
        cafile=settings.kafka_ssl_cafile,
        certfile=settings.kafka_ssl_certfile,
        keyfile=settings.kafka_ssl_keyfile,
    )
    # The certificate is still verified against the CA; only its host name is not compared.
    context.check_hostname = settings.kafka_ssl_check_hostname
    return context


def _password(settings: Settings) -> str | None:
    secret = settings.kafka_sasl_password
    return secret.get_secret_value() if secret is not None else None


def client_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments of every aiokafka client (producer, consumer, admin) for ``settings``.

    ``{"security_protocol": "PLAINTEXT"}`` for a plaintext cluster; raises
    :class:`KafkaSecurityError` for settings that :func:`check` refuses.
    """
    check(settings)
    options: dict[str, Any] = {"security_protocol": settings.kafka_security_protocol}
    if uses_tls(settings):
        options["ssl_context"] = ssl_context(settings)
    if uses_sasl(settings):
        options["sasl_mechanism"] = settings.kafka_sasl_mechanism
        options["sasl_plain_username"] = settings.kafka_sasl_username
        options["sasl_plain_password"] = _password(settings)
    return options


def faust_credentials(settings: Settings) -> CredentialsT | None:
    """Faust's ``broker_credentials`` for ``settings``: None for PLAINTEXT.

    Faust's aiokafka driver turns them into the same options as :func:`client_options`
    (``credentials_to_aiokafka_auth``); its SASL credentials say SASL_SSL exactly when they hold
    a TLS context, and pass any mechanism through, SCRAM included.
    """
    check(settings)
    from faust.auth import SASLCredentials, SSLCredentials

    credentials: CredentialsT
    if uses_sasl(settings):
        credentials = SASLCredentials(
            username=settings.kafka_sasl_username,
            password=_password(settings),
            ssl_context=ssl_context(settings) if uses_tls(settings) else None,
            mechanism=settings.kafka_sasl_mechanism,
        )
    elif uses_tls(settings):
        credentials = SSLCredentials(ssl_context(settings))  # a context: SSLCredentials(cafile=) raises TypeError
    else:
        return None
    assert credentials.protocol.value == settings.kafka_security_protocol  # type: ignore[attr-defined]
    return credentials


def secrets(settings: Settings) -> dict[str, str]:
    """The secret settings in clear, for handing settings to a child process (``model_dump`` masks them)."""
    password = _password(settings)
    return {} if password is None else {"kafka_sasl_password": password}
