"""The local Kafka launcher: idempotent start, and acknowledged records surviving restarts and crashes."""

from __future__ import annotations

from pathlib import Path

import pytest

from flux.localkafka import (
    LocalKafka,
    LocalKafkaCluster,
    LocalKafkaError,
    SecureListeners,
    cluster_replication,
    new_cluster_id,
    open_launcher,
    quorum_voters,
    write_cluster_layout,
)

# --- no broker needed ----------------------------------------------------------------------------------------------


def test_cluster_id_is_22_chars_of_base64url_never_starting_with_a_dash() -> None:
    ids = {new_cluster_id() for _ in range(2000)}
    assert len(ids) == 2000
    for cid in ids:
        assert len(cid) == 22
        assert not cid.startswith("-"), "the storage tool would take it for an option"
        assert set(cid) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def test_single_node_properties_are_a_kraft_broker_and_controller(tmp_path: Path) -> None:
    props = LocalKafka(tmp_path, port=29092, controller_port=29093).properties()
    assert props["process.roles"] == "broker,controller"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:29093"
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:29092,CONTROLLER://127.0.0.1:29093"
    assert props["advertised.listeners"] == "PLAINTEXT://127.0.0.1:29092"
    assert props["group.initial.rebalance.delay.ms"] == "0"
    assert props["log.dirs"] == str(tmp_path.resolve() / "kraft-logs")


def test_node_of_a_three_node_quorum_lists_all_voters(tmp_path: Path) -> None:
    voters = quorum_voters([(n, "127.0.0.1", 29190 + n) for n in (1, 2, 3)])
    node = LocalKafka(tmp_path, port=29182, controller_port=29192, node_id=2, quorum_voters=voters)
    assert node.properties()["node.id"] == "2"
    assert node.properties()["controller.quorum.voters"] == "1@127.0.0.1:29191,2@127.0.0.1:29192,3@127.0.0.1:29193"


def test_secure_listeners_sit_next_to_the_plaintext_one(tmp_path: Path) -> None:
    secure = SecureListeners(
        users={"flux": "s3cret"},
        sasl_plaintext_port=29094,
        sasl_ssl_port=29095,
        ssl_port=29096,
        keystore=tmp_path / "broker.pem",
        truststore=tmp_path / "ca.pem",
    )
    kafka = LocalKafka(tmp_path, port=29092, controller_port=29093, secure=secure)
    props = kafka.properties()
    assert props["listeners"] == (
        "PLAINTEXT://127.0.0.1:29092,CONTROLLER://127.0.0.1:29093,"
        "SASL_PLAINTEXT://127.0.0.1:29094,SASL_SSL://127.0.0.1:29095,SSL://127.0.0.1:29096"
    )
    assert props["inter.broker.listener.name"] == "PLAINTEXT"
    assert props["listener.security.protocol.map"].endswith(",SASL_PLAINTEXT:SASL_PLAINTEXT,SASL_SSL:SASL_SSL,SSL:SSL")
    assert props["sasl.enabled.mechanisms"] == "PLAIN,SCRAM-SHA-256,SCRAM-SHA-512"
    assert props["listener.name.sasl_ssl.plain.sasl.jaas.config"].endswith(
        'PlainLoginModule required user_flux="s3cret";'
    )
    assert props["listener.name.sasl_plaintext.scram-sha-256.sasl.jaas.config"].endswith("ScramLoginModule required;")
    assert props["ssl.keystore.type"] == "PEM" and props["listener.name.ssl.ssl.client.auth"] == "required"
    assert secure.scram_arguments() == [
        "--add-scram",
        "SCRAM-SHA-256=[name=flux,password=s3cret]",
        "--add-scram",
        "SCRAM-SHA-512=[name=flux,password=s3cret]",
    ]
    assert kafka.bootstrap_for("SASL_SSL") == "127.0.0.1:29095"
    assert kafka.bootstrap_for("PLAINTEXT") == kafka.bootstrap
    assert LocalKafka(tmp_path, port=29092, controller_port=29093).ports() == [29092, 29093]
    with pytest.raises(LocalKafkaError, match="no SSL listener"):
        LocalKafka(tmp_path, port=29092, controller_port=29093).bootstrap_for("SSL")


@pytest.mark.parametrize(
    ("secure", "message"),
    [
        (SecureListeners(sasl_plaintext_port=1), "need at least one user"),
        (SecureListeners(users={"a": "b"}, ssl_port=1), "need a keystore"),
        (SecureListeners(users={"a": 'pass"word'}, sasl_plaintext_port=1), "without quotes"),
    ],
)
def test_secure_listeners_refuse_what_the_broker_could_not_take(
    secure: SecureListeners, message: str, tmp_path: Path
) -> None:
    with pytest.raises(LocalKafkaError, match=message):
        LocalKafka(tmp_path, port=29092, controller_port=29093, secure=secure)


def test_stopping_a_broker_that_is_not_running_is_a_no_op(tmp_path: Path) -> None:
    kafka = LocalKafka(tmp_path, port=29092, controller_port=29093)
    assert not kafka.is_running()
    assert kafka.stop() is False
    assert kafka.kill() is False


def test_a_three_broker_cluster_replicates_three_times_and_writes_need_two(tmp_path: Path) -> None:
    ports = [(29292, 29293), (29294, 29295), (29296, 29297)]
    cluster = LocalKafkaCluster(tmp_path, 3, ports=ports)
    assert cluster.bootstrap == "127.0.0.1:29292,127.0.0.1:29294,127.0.0.1:29296"
    second = cluster.brokers[1]
    assert second.data_dir == tmp_path.resolve() / "broker-2"
    props = second.properties()
    assert props["node.id"] == "2"
    assert props["process.roles"] == "broker,controller"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:29293,2@127.0.0.1:29295,3@127.0.0.1:29297"
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:29294,CONTROLLER://127.0.0.1:29295"
    for name in ("default.replication.factor", "offsets.topic.replication.factor"):
        assert props[name] == "3"
    assert props["transaction.state.log.replication.factor"] == "3"
    assert props["min.insync.replicas"] == props["transaction.state.log.min.isr"] == "2"
    assert {b.cluster_id for b in cluster.brokers} == {cluster.cluster_id}


def test_replication_never_exceeds_the_brokers() -> None:
    assert cluster_replication(1)["default.replication.factor"] == "1"
    assert cluster_replication(1)["min.insync.replicas"] == "1"
    assert cluster_replication(2)["min.insync.replicas"] == "1"
    assert cluster_replication(5)["default.replication.factor"] == "3"
    assert cluster_replication(5)["min.insync.replicas"] == "2"


def test_an_existing_cluster_keeps_its_id_and_ports_and_refuses_another_size(tmp_path: Path) -> None:
    write_cluster_layout(tmp_path, "Rmx1eExvY2FsS2Fma2ExMQ", "127.0.0.1", [(29392, 29393), (29394, 29395)])
    cluster = LocalKafkaCluster(tmp_path)
    assert cluster.cluster_id == "Rmx1eExvY2FsS2Fma2ExMQ"
    assert [(b.port, b.controller_port) for b in cluster] == [(29392, 29393), (29394, 29395)]
    with pytest.raises(LocalKafkaError, match="cluster of 2 brokers, not 3"):
        LocalKafkaCluster(tmp_path, 3)
    assert isinstance(open_launcher(tmp_path), LocalKafkaCluster), "a dir holding a cluster opens as one"
    assert isinstance(open_launcher(tmp_path / "single"), LocalKafka)
    assert not cluster.is_running()
    assert cluster.stop() is False


def test_the_environment_gives_the_defaults_and_a_bad_number_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLUX_KAFKA_PORT", "29492")
    monkeypatch.setenv("FLUX_KAFKA_CONTROLLER_PORT", "29493")
    monkeypatch.setenv("FLUX_KAFKA_HEAP_OPTS", "")  # empty counts as unset
    monkeypatch.setenv("FLUX_KAFKA_DATA_DIR", str(tmp_path / "kafka"))
    kafka = LocalKafka()
    assert (kafka.port, kafka.controller_port, kafka.heap_opts) == (29492, 29493, "-Xms256m -Xmx1g")
    assert kafka.data_dir == tmp_path.resolve() / "kafka"
    assert LocalKafka(tmp_path, port=1, controller_port=2, heap_opts="-Xmx64m").heap_opts == "-Xmx64m"
    monkeypatch.setenv("FLUX_KAFKA_PORT", "ninety")
    with pytest.raises(LocalKafkaError, match="FLUX_KAFKA_PORT='ninety' is not an integer"):
        LocalKafka(tmp_path)
