"""Flux on secured Kafka: the security settings, and real nodes on SASL and TLS listeners of a real broker."""

from __future__ import annotations

import argparse
import ssl
from typing import Any

import pytest
from faust.auth import SASLCredentials, SSLCredentials
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth
from pydantic import SecretStr, ValidationError

from api.cli.main import cmd_serve
from flux.config import Settings
from flux.kafka.security import KafkaSecurityError, check, client_options, faust_credentials
from tests.tls_certs import PASSWORD, USER, TlsFiles, sasl

# --- the settings: no broker needed ---------------------------------------------------------------------------------


def test_plaintext_needs_no_options_and_no_faust_credentials() -> None:
    settings = Settings()
    assert client_options(settings) == {"security_protocol": "PLAINTEXT"}
    assert faust_credentials(settings) is None


def test_scram_over_sasl_plaintext_passes_the_mechanism_and_credentials_without_tls() -> None:
    options = client_options(sasl("SASL_PLAINTEXT", "SCRAM-SHA-256"))
    assert options == {
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "SCRAM-SHA-256",
        "sasl_plain_username": USER,
        "sasl_plain_password": PASSWORD,
    }


def test_sasl_ssl_verifies_the_broker_against_the_ca_file_and_its_host_name(tls: TlsFiles) -> None:
    options = client_options(sasl("SASL_SSL", "SCRAM-SHA-512", kafka_ssl_cafile=tls.ca))
    context = options.pop("ssl_context")
    assert options["security_protocol"] == "SASL_SSL" and options["sasl_mechanism"] == "SCRAM-SHA-512"
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert [dict(pair[0] for pair in ca["subject"])["commonName"] for ca in context.get_ca_certs()] == ["flux test CA"]


def test_ssl_with_a_client_certificate_and_no_host_name_check(tls: TlsFiles) -> None:
    settings = Settings(
        kafka_security_protocol="SSL",
        kafka_ssl_cafile=tls.ca,
        kafka_ssl_certfile=tls.client_cert,
        kafka_ssl_keyfile=tls.client_key,
        kafka_ssl_check_hostname=False,
    )
    options = client_options(settings)
    assert set(options) == {"security_protocol", "ssl_context"}
    assert not options["ssl_context"].check_hostname
    assert options["ssl_context"].verify_mode == ssl.CERT_REQUIRED, "the certificate is still checked"


@pytest.mark.parametrize(
    "settings",
    [
        lambda tls: sasl("SASL_PLAINTEXT", "SCRAM-SHA-256"),
        lambda tls: sasl("SASL_PLAINTEXT", "PLAIN"),
        lambda tls: sasl("SASL_SSL", "SCRAM-SHA-512", kafka_ssl_cafile=tls.ca),
        lambda tls: sasl("SASL_SSL", "PLAIN"),
        lambda tls: Settings(kafka_security_protocol="SSL", kafka_ssl_cafile=tls.ca),
    ],
    ids=["scram-256", "plain", "sasl-ssl-scram-512", "sasl-ssl-plain", "ssl"],
)
def test_faust_gets_the_same_options_as_every_other_client(settings: Any, tls: TlsFiles) -> None:
    # Faust's aiokafka driver turns broker_credentials into client options itself: they must agree.
    chosen = settings(tls)
    ours = client_options(chosen)
    faust = dict(credentials_to_aiokafka_auth(faust_credentials(chosen)))
    assert isinstance(faust.pop("ssl_context", None), ssl.SSLContext) == ("ssl_context" in ours)
    ours.pop("ssl_context", None)
    assert faust == ours


def test_faust_credentials_are_sasl_or_ssl_credentials(tls: TlsFiles) -> None:
    scram = faust_credentials(sasl("SASL_SSL", "SCRAM-SHA-512", kafka_ssl_cafile=tls.ca))
    assert isinstance(scram, SASLCredentials)
    assert scram.mechanism.value == "SCRAM-SHA-512" and scram.protocol.value == "SASL_SSL"
    assert isinstance(faust_credentials(Settings(kafka_security_protocol="SSL")), SSLCredentials)


def test_values_are_case_insensitive_and_unknown_ones_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLUX_KAFKA_SECURITY_PROTOCOL", "sasl_ssl")
    monkeypatch.setenv("FLUX_KAFKA_SASL_MECHANISM", "scram-sha-256")
    monkeypatch.setenv("FLUX_KAFKA_SASL_USERNAME", USER)
    monkeypatch.setenv("FLUX_KAFKA_SASL_PASSWORD", PASSWORD)
    settings = Settings()
    assert (settings.kafka_security_protocol, settings.kafka_sasl_mechanism) == ("SASL_SSL", "SCRAM-SHA-256")
    with pytest.raises(ValidationError, match="kafka_sasl_mechanism"):
        Settings(kafka_sasl_mechanism="GSSAPI")
    with pytest.raises(ValidationError, match="kafka_ssl_cafile"):
        Settings(kafka_security_protocol="SSL", kafka_ssl_cafile="/nonexistent/ca.pem")


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (dict(kafka_security_protocol="SASL_SSL"), "needs FLUX_KAFKA_SASL_USERNAME and FLUX_KAFKA_SASL_PASSWORD"),
        (dict(kafka_security_protocol="SASL_PLAINTEXT", kafka_sasl_username=USER), "needs FLUX_KAFKA_SASL_PASSWORD"),
        (dict(kafka_sasl_username=USER, kafka_sasl_password=PASSWORD), "does not authenticate with SASL"),
        (dict(kafka_security_protocol="SSL", kafka_sasl_password=PASSWORD), "does not authenticate with SASL"),
        (dict(kafka_security_protocol="SASL_PLAINTEXT", kafka_sasl_username=USER, kafka_sasl_password=PASSWORD,
              kafka_ssl_cafile=__file__), "FLUX_KAFKA_SSL_CAFILE set, but .* does not use TLS"),
        (dict(kafka_security_protocol="SSL", kafka_ssl_keyfile=__file__), "needs FLUX_KAFKA_SSL_CERTFILE"),
    ],
    ids=["sasl-no-user", "sasl-no-password", "user-on-plaintext", "password-on-ssl", "cafile-no-tls", "key-no-cert"],
)  # fmt: skip
def test_combinations_that_cannot_work_are_refused(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):  # the settings' own validator
        Settings(**settings)
    # Settings that skipped validation (model_construct) are still refused where they are used.
    secret = {"kafka_sasl_password": SecretStr(PASSWORD)} if "kafka_sasl_password" in settings else {}
    unchecked = Settings.model_construct(**{**settings, **secret})
    with pytest.raises(KafkaSecurityError, match=message):
        check(unchecked)
    with pytest.raises(KafkaSecurityError):
        client_options(unchecked)


def test_a_node_refuses_to_start_with_sasl_and_no_user(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FLUX_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    assert cmd_serve(argparse.Namespace(port=None, host=None)) == 2
    assert "FLUX_KAFKA_SECURITY_PROTOCOL=SASL_SSL needs FLUX_KAFKA_SASL_USERNAME" in capsys.readouterr().err
    monkeypatch.setenv("FLUX_KAFKA_SASL_MECHANISM", "SCRAM-SHA-1")
    assert cmd_serve(argparse.Namespace(port=None, host=None)) == 2
    assert "FLUX_KAFKA_SASL_MECHANISM: Input should be" in capsys.readouterr().err


def test_the_password_is_masked_but_reaches_replay_workers() -> None:
    settings = sasl("SASL_PLAINTEXT", "SCRAM-SHA-512")
    assert PASSWORD not in repr(settings) and PASSWORD not in str(settings.model_dump(mode="json"))
    # What a replay worker process gets on its stdin, and reads back into its settings:
    child = Settings(**settings.in_clear())
    assert client_options(child) == client_options(settings)


def test_every_secret_reaches_replay_workers() -> None:
    # The soak found it: a replay worker read FLUX_CLUSTER_SECRET back as the dump's "**********", refused it
    # as shorter than 32 characters, and every replay failed on a node with a cluster secret (make cluster's).
    secret = "cluster-secret-" + "s" * 32
    settings = sasl("SASL_PLAINTEXT", "SCRAM-SHA-512").model_copy(update={"cluster_secret": SecretStr(secret)})
    assert secret not in str(settings.model_dump(mode="json"))
    child = Settings(**settings.in_clear())
    assert child.cluster_secret is not None and child.cluster_secret.get_secret_value() == secret
    assert child.kafka_sasl_password is not None and child.kafka_sasl_password.get_secret_value() == PASSWORD
    assert child == settings
