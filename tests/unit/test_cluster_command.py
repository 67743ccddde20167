"""``flux cluster``: each node's settings, and a run of real nodes stopped by Ctrl-C without leaving any behind."""

from __future__ import annotations

from pathlib import Path

from api.cli.cluster import node_environments, replication_factor

# --- no broker needed ----------------------------------------------------------------------------------------------


def test_nodes_share_the_app_and_each_has_its_own_port_data_dir_and_url(tmp_path: Path) -> None:
    envs = node_environments(3, "b1:9092,b2:9094", 3000, tmp_path, "3", {"PATH": "/bin", "FLUX_PARTITIONS": "6"})
    assert list(envs) == ["node-1", "node-2", "node-3"]
    assert {env["FLUX_APP_ID"] for env in envs.values()} == {"flux"}
    assert [env["FLUX_PORT"] for env in envs.values()] == ["3000", "3001", "3002"]
    assert [env["FLUX_ADVERTISED_URL"] for env in envs.values()] == [
        "http://127.0.0.1:3000",
        "http://127.0.0.1:3001",
        "http://127.0.0.1:3002",
    ]
    assert [env["FLUX_DATA_DIR"] for env in envs.values()] == [str(tmp_path / f"node-{i}") for i in (1, 2, 3)]
    node = envs["node-2"]
    assert node["KAFKA_BOOTSTRAP_SERVERS"] == "b1:9092,b2:9094"
    assert node["FLUX_REPLICATION_FACTOR"] == "3"
    assert node["FLUX_PARTITIONS"] == "6" and node["PATH"] == "/bin", "the rest of the environment passes through"


def test_the_nodes_share_a_cluster_secret_made_for_the_run_unless_one_is_given(tmp_path: Path) -> None:
    made = node_environments(3, "b:1", 3000, tmp_path, "1", {})
    secrets = {env["FLUX_CLUSTER_SECRET"] for env in made.values()}
    assert len(secrets) == 1 and len(secrets.pop()) >= 32
    again = node_environments(3, "b:1", 3000, tmp_path, "1", {})
    assert again["node-1"]["FLUX_CLUSTER_SECRET"] != made["node-1"]["FLUX_CLUSTER_SECRET"]
    given = node_environments(2, "b:1", 3000, tmp_path, "1", {"FLUX_CLUSTER_SECRET": "s" * 40})
    assert {env["FLUX_CLUSTER_SECRET"] for env in given.values()} == {"s" * 40}


def test_nodes_listening_on_every_interface_advertise_loopback(tmp_path: Path) -> None:
    envs = node_environments(1, "b:1", 4000, tmp_path, "1", {"FLUX_HOST": "0.0.0.0", "FLUX_APP_ID": "shop"})
    assert envs["node-1"]["FLUX_ADVERTISED_URL"] == "http://127.0.0.1:4000"
    assert envs["node-1"]["FLUX_APP_ID"] == "shop"


def test_replication_follows_the_local_brokers_unless_set() -> None:
    assert replication_factor(3, {}) == "3"
    assert replication_factor(1, {}) == "1"
    assert replication_factor(5, {}) == "3"
    assert replication_factor(None, {}) == "3", "external Kafka: three replicas"
    assert replication_factor(3, {"FLUX_REPLICATION_FACTOR": "2"}) == "2"
