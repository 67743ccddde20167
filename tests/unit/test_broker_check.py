"""How a cluster that refuses Flux is explained (the real refusals run in tests/e2e/test_kafka_security.py)."""

from __future__ import annotations

import ssl

from aiokafka import errors

from flux.config import Settings
from flux.kafka.broker_check import explain

SERVER = "broker:9093"


def _untrusted(message: str) -> ssl.SSLCertVerificationError:
    exc = ssl.SSLCertVerificationError(1, f"[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: {message}")
    exc.verify_message = message
    return exc


def test_a_certificate_for_another_host_points_at_the_host_name_not_the_ca() -> None:
    settings = Settings(kafka_security_protocol="SSL")
    diagnosis = explain(_untrusted("IP address mismatch, certificate is not valid for '10.0.0.7'."), SERVER, settings)
    assert diagnosis.misconfigured
    assert "does not name the host in KAFKA_BOOTSTRAP_SERVERS" in diagnosis.reason
    assert "FLUX_KAFKA_SSL_CHECK_HOSTNAME=false" in diagnosis.reason


def test_an_unknown_ca_points_at_the_ca_file() -> None:
    settings = Settings(kafka_security_protocol="SSL")
    diagnosis = explain(_untrusted("unable to get local issuer certificate"), SERVER, settings)
    assert diagnosis.misconfigured and "set FLUX_KAFKA_SSL_CAFILE" in diagnosis.reason


def test_a_mechanism_the_broker_does_not_offer_names_the_mechanism_setting() -> None:
    settings = Settings(kafka_security_protocol="SASL_SSL", kafka_sasl_username="u", kafka_sasl_password="p")
    refused = errors.UnsupportedSaslMechanismError("Enabled mechanisms are: ['SCRAM-SHA-512']")
    diagnosis = explain(refused, SERVER, settings)
    assert diagnosis.misconfigured and "set FLUX_KAFKA_SASL_MECHANISM" in diagnosis.reason


def test_a_reset_during_the_tls_handshake_asks_whether_the_listener_uses_tls() -> None:
    diagnosis = explain(ConnectionResetError(), SERVER, Settings(kafka_security_protocol="SSL"))
    assert diagnosis.misconfigured and "check FLUX_KAFKA_SECURITY_PROTOCOL=SSL" in diagnosis.reason


def test_an_unreachable_broker_is_not_a_configuration_error() -> None:
    refused = ConnectionRefusedError(111, "Connection refused")
    assert not explain(refused, SERVER, Settings()).misconfigured
    assert not explain(TimeoutError(), SERVER, Settings()).misconfigured
