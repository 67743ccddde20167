"""Why the Kafka cluster cannot be used, in words a user can act on.

aiokafka reports a failed bootstrap as ``Unable to bootstrap from [...]``; the cause (refused
credentials, an untrusted certificate, a listener of another protocol) is only logged. When Flux
cannot reach its cluster at start, :func:`diagnose` connects to each bootstrap server once, as
the clients would, and names the cause and the settings to check.
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass

from aiokafka import errors
from aiokafka.conn import collect_hosts, create_conn
from aiokafka.protocol.metadata import MetadataRequest

from flux.config import Settings
from flux.kafka.security import client_options, uses_sasl, uses_tls

CHECK_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Diagnosis:
    """What went wrong, and whether the configuration is at fault (retrying as is will not help)."""

    reason: str
    misconfigured: bool


def _sasl_settings(settings: Settings) -> str:
    return (
        f"user {settings.kafka_sasl_username!r}, FLUX_KAFKA_SASL_MECHANISM={settings.kafka_sasl_mechanism}; "
        "check FLUX_KAFKA_SASL_USERNAME, FLUX_KAFKA_SASL_PASSWORD and FLUX_KAFKA_SASL_MECHANISM"
    )


def explain(exc: BaseException, server: str, settings: Settings) -> Diagnosis:
    """What ``exc``, raised connecting to ``server`` with ``settings``, says about the configuration."""
    protocol = f"FLUX_KAFKA_SECURITY_PROTOCOL={settings.kafka_security_protocol}"
    if isinstance(exc, errors.SaslAuthenticationFailed):
        return Diagnosis(f"authentication failed at {server} ({exc}): {_sasl_settings(settings)}", True)
    if isinstance(exc, errors.UnsupportedSaslMechanismError):
        return Diagnosis(f"authentication failed at {server}: {exc}; set FLUX_KAFKA_SASL_MECHANISM", True)
    if isinstance(exc, ssl.SSLCertVerificationError):
        detail = exc.verify_message or str(exc)
        if "mismatch" in detail.lower():
            advice = (
                "the certificate does not name the host in KAFKA_BOOTSTRAP_SERVERS; "
                "use the name it was issued for, or FLUX_KAFKA_SSL_CHECK_HOSTNAME=false"
            )
        else:
            advice = "set FLUX_KAFKA_SSL_CAFILE to the CA certificate (PEM) that signed the broker's certificate"
        return Diagnosis(f"the TLS certificate of {server} failed verification ({detail}): {advice}", True)
    if isinstance(exc, ConnectionResetError | ssl.SSLEOFError) and uses_tls(settings):
        return Diagnosis(
            f"{server} dropped the connection during the TLS handshake: does that listener use TLS? check {protocol}",
            True,
        )
    if isinstance(exc, ssl.SSLError):
        return Diagnosis(
            f"the TLS handshake with {server} failed ({exc}): does that listener use TLS? check {protocol}", True
        )
    if isinstance(exc, errors.KafkaConnectionError):
        if uses_tls(settings) and settings.kafka_ssl_certfile is None:
            question = "does that listener require a client certificate (FLUX_KAFKA_SSL_CERTFILE), or SASL?"
        else:
            question = "does that listener expect TLS or SASL?"
        return Diagnosis(f"{server} closed the connection before answering ({exc}): {question} check {protocol}", True)
    if isinstance(exc, TimeoutError):
        return Diagnosis(f"no answer from {server} within {CHECK_TIMEOUT_S:.0f} s: check {protocol}", False)
    if isinstance(exc, OSError):
        return Diagnosis(f"cannot connect to {server} ({exc.strerror or str(exc) or repr(exc)})", False)
    return Diagnosis(f"{server}: {exc!r}", False)


async def _check_server(host: str, port: int, settings: Settings) -> Diagnosis | None:
    server = f"{host}:{port}"
    try:
        async with asyncio.timeout(CHECK_TIMEOUT_S):
            conn = await create_conn(
                host,
                port,
                client_id=f"{settings.app_id}-check",
                request_timeout_ms=int(CHECK_TIMEOUT_S * 1000),
                **client_options(settings),
            )
    except Exception as exc:
        return explain(exc, server, settings)
    try:
        async with asyncio.timeout(CHECK_TIMEOUT_S):
            await conn.send(MetadataRequest([]))
    except errors.KafkaConnectionError as exc:
        if uses_sasl(settings):
            return explain(exc, server, settings)
        # A SASL listener answers the handshake's ApiVersions request before authentication,
        # then closes the connection at the first other request.
        return Diagnosis(
            f"{server} closed the connection at the first request after the handshake ({exc}): the listener "
            f"probably expects SASL; check FLUX_KAFKA_SECURITY_PROTOCOL={settings.kafka_security_protocol}",
            True,
        )
    except Exception as exc:
        return explain(exc, server, settings)
    finally:
        conn.close()
    return None


async def diagnose(settings: Settings) -> Diagnosis:
    """Connect to each bootstrap server once and say what stops the clients (the first cause found)."""
    found = []
    for host, port, _ in collect_hosts(settings.kafka_bootstrap_servers):
        diagnosis = await _check_server(host, port, settings)
        if diagnosis is not None:
            if diagnosis.misconfigured:
                return diagnosis
            found.append(diagnosis)
    if found:
        return found[0]
    return Diagnosis("every bootstrap server answered this check; the failure may have been passing", False)
