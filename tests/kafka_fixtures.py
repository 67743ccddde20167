"""pytest plugin: one real Kafka broker for the whole test session.

Load it from ``tests/conftest.py`` with ``pytest_plugins = ["tests.kafka_fixtures"]``.

Where the broker comes from, first match wins:

1. ``KAFKA_BOOTSTRAP_SERVERS`` is set: that (external) broker is used as is.
2. ``FLUX_TEST_KAFKA=local`` is not set and a Docker engine answers ``docker info``: a testcontainers
   ``KafkaContainer`` in KRaft mode (image ``$FLUX_TEST_KAFKA_IMAGE``, default ``confluentinc/cp-kafka:7.9.0``).
3. Otherwise :class:`flux.localkafka.LocalKafka` on free ports with a data dir under pytest's tmp dir.

Fixtures: ``kafka_bootstrap`` (str, session) and ``local_kafka`` (the launcher, session; tests that
stop/kill/restart the broker use it and are skipped when the broker is not ours to control).
Tests that stop the broker must start it again before they finish, as other tests share it.

``kafka_cluster`` (session, started only when a test asks for it) is a separate three-broker KRaft
cluster from :class:`flux.localkafka.LocalKafkaCluster` on free ports, always launched here (fault
tests must be able to kill its brokers): ``kafka_cluster.bootstrap`` lists all three,
``kafka_cluster.brokers[i].kill()`` / ``.start()`` crash and restart one. A test that stops a
broker starts it again before it finishes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from flux.localkafka import JVM_OPTS, QUICK_START_JVM_OPTS, LocalKafka, LocalKafkaCluster, free_port

log = logging.getLogger(__name__)

DEFAULT_TESTCONTAINERS_IMAGE = "confluentinc/cp-kafka:7.9.0"
CLUSTER_BROKERS = 3
CLUSTER_HEAP_OPTS = "-Xms128m -Xmx512m"  # three JVMs beside the session's broker and the Flux nodes


@dataclass
class KafkaUnderTest:
    """The session's broker: where it came from, its bootstrap address and, if we launched it, the launcher."""

    kind: str  # "external" | "docker" | "local"
    bootstrap: str
    launcher: LocalKafka | None = None


def docker_available(timeout: float = 5.0) -> bool:
    """True when a Docker engine answers ``docker info`` within ``timeout`` seconds."""
    if shutil.which("docker") is None:
        return False
    try:
        result = subprocess.run(["docker", "info"], capture_output=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0


def _announce(config: pytest.Config, message: str) -> None:
    log.warning("%s", message)
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    capture = config.pluginmanager.get_plugin("capturemanager")
    if reporter is None:
        return
    with capture.global_and_fixture_disabled() if capture is not None else contextlib.nullcontext():
        reporter.write_line(f"[kafka] {message}")


@pytest.fixture(scope="session")
def kafka_under_test(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[KafkaUnderTest]:
    """Provide the session's Kafka broker (external, testcontainers or the local launcher) and tear it down."""
    external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if external:
        _announce(request.config, f"using external broker KAFKA_BOOTSTRAP_SERVERS={external}")
        yield KafkaUnderTest("external", external)
        return

    if os.environ.get("FLUX_TEST_KAFKA", "").lower() != "local" and docker_available():
        from testcontainers.community.kafka import KafkaContainer

        image = os.environ.get("FLUX_TEST_KAFKA_IMAGE", DEFAULT_TESTCONTAINERS_IMAGE)
        container = KafkaContainer(image).with_kraft().with_env("KAFKA_NUM_PARTITIONS", "8")
        container.start(timeout=120)
        try:
            bootstrap = container.get_bootstrap_server()
            _announce(request.config, f"using testcontainers Kafka ({image}) at {bootstrap}")
            yield KafkaUnderTest("docker", bootstrap)
        finally:
            container.stop()
        return

    kafka = LocalKafka(
        tmp_path_factory.mktemp("kafka"),
        port=free_port(),
        controller_port=free_port(),
        progress=lambda line: log.info("%s", line),
    )
    bootstrap = kafka.start(timeout=120)
    _announce(request.config, f"using local Kafka launcher at {bootstrap} (data {kafka.data_dir})")
    try:
        yield KafkaUnderTest("local", bootstrap, kafka)
    finally:
        kafka.stop()


@pytest.fixture(scope="session")
def kafka_bootstrap(kafka_under_test: KafkaUnderTest) -> str:
    """Bootstrap address (``host:port``) of a running Kafka broker, shared by the whole session."""
    return kafka_under_test.bootstrap


@pytest.fixture(scope="session")
def local_kafka(kafka_under_test: KafkaUnderTest) -> LocalKafka:
    """The launcher of the session's broker, for tests that stop, kill or restart it (skips otherwise)."""
    if kafka_under_test.launcher is None:
        pytest.skip(
            f"needs the local Kafka launcher to stop/kill the broker, but the session uses "
            f"a {kafka_under_test.kind} broker at {kafka_under_test.bootstrap} "
            f"(unset KAFKA_BOOTSTRAP_SERVERS / set FLUX_TEST_KAFKA=local)"
        )
    return kafka_under_test.launcher


@pytest.fixture(scope="session")
def kafka_cluster(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalKafkaCluster]:
    """A local three-broker KRaft cluster (replication factor 3, min ISR 2) for the session; stopped at its end."""
    cluster = LocalKafkaCluster(
        tmp_path_factory.mktemp("kafka-cluster"),
        CLUSTER_BROKERS,
        ports=[(free_port(), free_port()) for _ in range(CLUSTER_BROKERS)],
        heap_opts=CLUSTER_HEAP_OPTS,
        jvm_opts=(*JVM_OPTS, *QUICK_START_JVM_OPTS),
        progress=lambda line: log.info("%s", line),
    )
    try:
        bootstrap = cluster.start(timeout=120)
        _announce(request.config, f"using a local {CLUSTER_BROKERS}-broker Kafka cluster at {bootstrap}")
        yield cluster
    finally:
        cluster.stop()
