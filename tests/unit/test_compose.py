"""The Docker files (which cannot run here) parse, and their settings are ones Flux and Kafka know."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from flux.config import Settings

ROOT = Path(__file__).resolve().parents[2]


def _compose(name: str) -> dict[str, Any]:
    loaded = yaml.safe_load((ROOT / name).read_text())
    assert isinstance(loaded, dict)
    return loaded


def test_every_flux_variable_of_the_cluster_compose_file_is_a_setting() -> None:
    services = _compose("docker-compose.cluster.yml")["services"]
    nodes = {name: s for name, s in services.items() if name.startswith("flux-")}
    assert sorted(nodes) == ["flux-1", "flux-2", "flux-3"]
    for name, node in nodes.items():
        env = node["environment"]
        unknown = [
            k for k in env if k.startswith("FLUX_") and k.removeprefix("FLUX_").lower() not in Settings.model_fields
        ]
        assert not unknown, f"{name}: {unknown} are not in flux/config.py"
        assert env["KAFKA_BOOTSTRAP_SERVERS"] == "kafka-1:19092,kafka-2:19092,kafka-3:19092"
        assert env["FLUX_APP_ID"] == "flux" and env["FLUX_REPLICATION_FACTOR"] == 3
        assert env["FLUX_ADVERTISED_URL"] == f"http://{name}:3000" and env["FLUX_NODE_ID"] == name
        assert node["build"] == "." and node["volumes"] == [f"{name}-data:/data"]
    assert len({node["ports"][0] for node in nodes.values()}) == 3


def test_the_cluster_compose_file_runs_three_kraft_voters_with_three_replicas() -> None:
    services = _compose("docker-compose.cluster.yml")["services"]
    brokers = [services[f"kafka-{n}"] for n in (1, 2, 3)]
    for node_id, broker in enumerate(brokers, 1):
        env = broker["environment"]
        assert broker["image"].startswith("apache/kafka:4.1")
        assert env["KAFKA_NODE_ID"] == node_id
        assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
        assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == "1@kafka-1:9093,2@kafka-2:9093,3@kafka-3:9093"
        assert env["KAFKA_DEFAULT_REPLICATION_FACTOR"] == env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == 3
        assert env["KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR"] == 3
        assert env["KAFKA_MIN_INSYNC_REPLICAS"] == env["KAFKA_TRANSACTION_STATE_LOG_MIN_ISR"] == 2
        assert f"PLAINTEXT://kafka-{node_id}:19092" in env["KAFKA_ADVERTISED_LISTENERS"]
    assert len({b["environment"]["CLUSTER_ID"] for b in brokers}) == 1


def test_the_image_runs_flux_serve_on_all_interfaces() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert 'CMD ["flux", "serve"]' in dockerfile
    assert "FLUX_HOST=0.0.0.0" in dockerfile
