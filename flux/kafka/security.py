"""How Flux authenticates to Kafka: the settings' security options as aiokafka and Faust take them.

Every Kafka client Flux creates takes ``**client_options(settings)``; the Faust app takes
``broker_credentials=faust_credentials(settings)``. Both build a fresh TLS context from the CA
file (and client certificate) for the SSL protocols. :func:`check` (from :mod:`flux.kafka.options`,
the settings' own validator) refuses combinations that cannot work, naming the variables to change.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from flux.kafka.options import (
    SASL_PROTOCOLS,
    TLS_PROTOCOLS,
    KafkaSecurityError,
    KafkaSecurityOptions,
    SaslMechanism,
    SecurityProtocol,
    check,
    password,
    uses_sasl,
    uses_tls,
)

if TYPE_CHECKING:
    import ssl

    from faust.types.auth import CredentialsT

__all__ = [
    "SASL_PROTOCOLS",
    "TLS_PROTOCOLS",
    "KafkaSecurityError",
    "SaslMechanism",
    "SecurityProtocol",
    "check",
    "client_options",
    "faust_credentials",
    "ssl_context",
    "uses_sasl",
    "uses_tls",
]


def ssl_context(settings: KafkaSecurityOptions) -> ssl.SSLContext:
    """A client TLS context: the CA file (else the system's CAs), the client certificate if any."""
    from aiokafka.helpers import create_ssl_context

    context: ssl.SSLContext = create_ssl_context(  # aiokafka.helpers is untyped
        cafile=settings.kafka_ssl_cafile,
        certfile=settings.kafka_ssl_certfile,
        keyfile=settings.kafka_ssl_keyfile,
    )
    # The certificate is still verified against the CA; only its host name is not compared.
    context.check_hostname = settings.kafka_ssl_check_hostname
    return context


def client_options(settings: KafkaSecurityOptions) -> dict[str, Any]:
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
        options["sasl_plain_password"] = password(settings)
    return options


def faust_credentials(settings: KafkaSecurityOptions) -> CredentialsT | None:
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
            password=password(settings),
            ssl_context=ssl_context(settings) if uses_tls(settings) else None,
            mechanism=settings.kafka_sasl_mechanism,
        )
    elif uses_tls(settings):
        credentials = SSLCredentials(ssl_context(settings))  # a context: SSLCredentials(cafile=) raises TypeError
    else:
        return None
    assert credentials.protocol.value == settings.kafka_security_protocol
    return credentials
