"""Flux on secured Kafka: the security settings, and real nodes on SASL and TLS listeners of a real broker."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from flux.localkafka import LocalKafka, SecureListeners, free_port
from tests.flux_process import FluxProcess
from tests.tls_certs import PASSWORD, USER, TlsFiles, make_tls_files

# --- the settings: no broker needed ---------------------------------------------------------------------------------


# --- real nodes on a secured broker ---------------------------------------------------------------------------------


@dataclass
class SecuredKafka:
    """A broker with SASL_PLAINTEXT, SASL_SSL and SSL (client certificates) listeners, and its test CA."""

    broker: LocalKafka
    tls: TlsFiles

    def node(self, base: Path, protocol: str, **env: str) -> FluxProcess:
        """An unstarted Flux node on the listener of ``protocol``, with its own topics and data dir."""
        name = f"sec{uuid.uuid4().hex[:8]}"
        env = {"FLUX_KAFKA_SECURITY_PROTOCOL": protocol, **env}
        return FluxProcess(self.broker.bootstrap_for(protocol), base / name, free_port(), name, 2, env)


@pytest.fixture(scope="module")
def secured_kafka(tmp_path_factory: pytest.TempPathFactory, tls: TlsFiles) -> Iterator[SecuredKafka]:
    """The module's own broker: user ``flux`` for PLAIN and SCRAM, TLS from the test CA; stopped after the module."""
    secure = SecureListeners(
        users={USER: PASSWORD},
        sasl_plaintext_port=free_port(),
        sasl_ssl_port=free_port(),
        ssl_port=free_port(),
        keystore=tls.broker_keystore,
        truststore=tls.ca,
    )
    broker = LocalKafka(tmp_path_factory.mktemp("kafka"), port=free_port(), controller_port=free_port(), secure=secure)
    broker.start(timeout=120)
    try:
        yield SecuredKafka(broker, tls)
    finally:
        broker.stop()


def sasl_env(mechanism: str, password: str = PASSWORD) -> dict[str, str]:
    """The environment of a node logging in as ``flux``."""
    return {
        "FLUX_KAFKA_SASL_MECHANISM": mechanism,
        "FLUX_KAFKA_SASL_USERNAME": USER,
        "FLUX_KAFKA_SASL_PASSWORD": password,
    }


@pytest.fixture
def started() -> Iterator[list[FluxProcess]]:
    """Nodes a test starts; stopped after it."""
    nodes: list[FluxProcess] = []
    yield nodes
    for node in nodes:
        node.stop()


def publish_and_read_back(node: FluxProcess) -> None:
    """One event, one batch (a transaction) and a read-your-writes publish, each read back."""
    entity = f"secure/{uuid.uuid4().hex[:6]}"
    assert node.publish(entity, {"temp": 21.5}).status_code == 200
    batch = [
        {"stream": "test", "source": "pytest", "payload": {"entity_id": f"{entity}-{i}", "properties": {"n": i}}}
        for i in range(3)
    ]
    response = node.client.post("/api/events/batch", json=batch)
    assert response.status_code == 200 and response.json()["successful"] == 3, response.text
    assert node.wait_entity(entity, lambda e: e["properties"] == {"temp": 21.5})
    assert node.wait_entity(f"{entity}-2", lambda e: e["properties"] == {"n": 2})
    again = {**batch[0], "payload": {"entity_id": entity, "properties": {"temp": 22}}}
    waited = node.client.post("/api/events?wait=true", json=again)
    assert waited.status_code == 200, waited.text
    assert node.entity(entity).json()["properties"] == {"temp": 22}


def serve_until_exit(node: FluxProcess, timeout: float = 90.0) -> subprocess.CompletedProcess[str]:
    """Run ``flux serve`` for ``node`` and wait until it exits on its own."""
    node.workdir.mkdir(parents=True, exist_ok=True)
    return subprocess.run(
        [sys.executable, "-m", "api.cli", "serve"],
        env=node.env(),
        cwd=node.workdir,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_a_node_on_a_scram_sha_256_listener_publishes_reads_and_replays(
    secured_kafka: SecuredKafka, tmp_path: Path, started: list[FluxProcess]
) -> None:
    node = secured_kafka.node(tmp_path, "SASL_PLAINTEXT", **sasl_env("SCRAM-SHA-256"))
    started.append(node)
    node.start()
    publish_and_read_back(node)
    before = node.client.get("/api/state/entities").json()
    # A replay folds in worker processes: they connect with the same credentials.
    job_id = node.client.post("/api/admin/replay", json={"fromBeginning": True}).json()["jobId"]
    job = node.wait_for(
        lambda: (j := node.client.get(f"/api/admin/replay/{job_id}").json())["status"] in ("done", "failed") and j,
        timeout=60,
        what="the replay",
    )
    assert job["status"] == "done" and job["events"] == 5, job
    assert node.client.get("/api/state/entities").json() == before


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-512", "PLAIN"])
def test_a_node_on_a_sasl_ssl_listener_trusts_the_ca_file(
    secured_kafka: SecuredKafka, tmp_path: Path, started: list[FluxProcess], mechanism: str
) -> None:
    env = {**sasl_env(mechanism), "FLUX_KAFKA_SSL_CAFILE": str(secured_kafka.tls.ca)}
    node = secured_kafka.node(tmp_path, "SASL_SSL", **env)
    started.append(node)
    node.start()
    publish_and_read_back(node)
    # Under uvloop, closing a TLS connection with a fetch on its way could take 30 s (each client's
    # stop waits for it), so a node's stop ran 10 s over, one stop in three; asyncio's loop closes at once.
    stopping = time.monotonic()
    node.stop()
    assert node.proc is not None and node.proc.returncode == 0, node.log_tail()
    assert time.monotonic() - stopping < 12, node.log_tail()


def test_a_node_on_an_ssl_listener_presents_its_client_certificate(
    secured_kafka: SecuredKafka, tmp_path: Path, started: list[FluxProcess]
) -> None:
    tls = secured_kafka.tls
    env = {
        "FLUX_KAFKA_SSL_CAFILE": str(tls.ca),
        "FLUX_KAFKA_SSL_CERTFILE": str(tls.client_cert),
        "FLUX_KAFKA_SSL_KEYFILE": str(tls.client_key),
    }
    node = secured_kafka.node(tmp_path, "SSL", **env)
    started.append(node)
    node.start()
    publish_and_read_back(node)


def test_a_wrong_password_stops_the_node_at_once_naming_authentication(
    secured_kafka: SecuredKafka, tmp_path: Path
) -> None:
    node = secured_kafka.node(tmp_path, "SASL_PLAINTEXT", **sasl_env("SCRAM-SHA-256", password="not-the-password"))
    started = time.monotonic()
    result = serve_until_exit(node)
    assert result.returncode == 2, result.stderr
    assert time.monotonic() - started < 30
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"flux: cannot use Kafka at {node.bootstrap}: authentication failed"), result.stderr
    assert "user 'flux', FLUX_KAFKA_SASL_MECHANISM=SCRAM-SHA-256" in last
    assert "not-the-password" not in result.stderr


def test_a_broker_certificate_from_an_unknown_ca_names_the_ca_setting(
    secured_kafka: SecuredKafka, tmp_path: Path
) -> None:
    other_ca = make_tls_files(tmp_path / "other", ca_name="some other CA").ca
    env = {**sasl_env("SCRAM-SHA-512"), "FLUX_KAFKA_SSL_CAFILE": str(other_ca)}
    result = serve_until_exit(secured_kafka.node(tmp_path, "SASL_SSL", **env))
    assert result.returncode == 2, result.stderr
    assert "certificate verify failed" in result.stderr
    assert "set FLUX_KAFKA_SSL_CAFILE to the CA certificate" in result.stderr.strip().splitlines()[-1]


def test_a_missing_client_certificate_names_the_certificate_setting(
    secured_kafka: SecuredKafka, tmp_path: Path
) -> None:
    node = secured_kafka.node(tmp_path, "SSL", FLUX_KAFKA_SSL_CAFILE=str(secured_kafka.tls.ca))
    result = serve_until_exit(node)
    assert result.returncode == 2, result.stderr
    assert "require a client certificate (FLUX_KAFKA_SSL_CERTFILE)" in result.stderr.strip().splitlines()[-1]


def test_plaintext_against_a_sasl_listener_names_the_protocol_setting(
    secured_kafka: SecuredKafka, tmp_path: Path
) -> None:
    node = secured_kafka.node(tmp_path, "SASL_PLAINTEXT", FLUX_KAFKA_SECURITY_PROTOCOL="PLAINTEXT")
    result = serve_until_exit(node)
    assert result.returncode == 2, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert "expects SASL; check FLUX_KAFKA_SECURITY_PROTOCOL=PLAINTEXT" in last, result.stderr
