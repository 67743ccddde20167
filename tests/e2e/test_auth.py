"""Namespaces (FLUX_AUTH_ENABLED=true) on a real broker: counts kept by the table, a registry every process
shares and keeps across restarts, and a node that refuses to start without a strong admin token.

Who may do what (tokens, scopes, private reads, rate limits, namespace administration) is proven in
process: tests/api/test_auth.py, test_namespaces.py and test_websocket.py. The helpers here also serve
tests/e2e/test_fuzz_api.py.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from tests.conftest import NodeFactory, _node
from tests.flux_process import FluxProcess

ADMIN_TOKEN = "test-admin-" + "x" * 40
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
RATE_LIMIT = 300
SECURED_ENV = {
    "FLUX_AUTH_ENABLED": "true",
    "FLUX_ADMIN_TOKEN": ADMIN_TOKEN,
    "FLUX_RATE_LIMIT_PER_MINUTE": str(RATE_LIMIT),
    "FLUX_MAX_PROPERTIES_PER_EVENT": "20",
    "FLUX_MAX_PROPERTY_KEY_LENGTH": "16",
}


@pytest.fixture(scope="module")
def secured(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FluxProcess]:
    """A node with auth on and public reads (as seed 003's public instance)."""
    node = _node(kafka_bootstrap, tmp_path_factory.mktemp("secured"), 4, SECURED_ENV)
    node.start()
    yield node
    node.stop()


def _name() -> str:
    return f"ns-{uuid.uuid4().hex[:10]}"


def register(node: FluxProcess, name: str | None = None) -> tuple[str, str]:
    """Register a namespace; returns (name, token)."""
    name = name or _name()
    response = node.client.post("/api/namespaces", json={"name": name}, headers=ADMIN)
    assert response.status_code == 201, response.text
    return name, response.json()["token"]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def event(entity_id: str, **properties: Any) -> dict[str, Any]:
    return {"stream": "test", "source": "pytest", "payload": {"entity_id": entity_id, "properties": properties}}


def publish(node: FluxProcess, token: str | None, entity_id: str, **properties: Any) -> httpx.Response:
    headers = bearer(token) if token else {}
    return node.client.post("/api/events", json=event(entity_id, **properties), headers=headers)


def entity_count(node: FluxProcess, name: str) -> int:
    return int(node.client.get(f"/api/namespaces/{name}").json()["entityCount"])


def test_namespace_entity_counts_follow_creations_deletions_and_recreations(secured: FluxProcess) -> None:
    name, token = register(secured)
    batch = [event(f"{name}/e{i}", i=i) for i in range(7)]
    assert secured.client.post("/api/events/batch", json=batch, headers=bearer(token)).status_code == 200
    secured.wait_for(lambda: entity_count(secured, name) == 7, what="seven entities")
    listed = {ns["name"]: ns["entityCount"] for ns in secured.client.get("/api/state/namespaces").json()}
    assert listed[name] == 7
    gone = {"entity_ids": [f"{name}/e0", f"{name}/e1"]}
    assert secured.client.post("/api/state/entities/delete", json=gone, headers=bearer(token)).status_code == 200
    later = int(time.time() * 1000) + 5_000  # surely newer than the tombstones
    again = [event(f"{name}/e2", i=2), {**event(f"{name}/e0", i=0), "timestamp": later}]  # update, re-creation
    assert secured.client.post("/api/events/batch", json=again, headers=bearer(token)).status_code == 200
    secured.wait_for(lambda: entity_count(secured, name) == 6, what="count after changes")


# -- every process agrees, across restarts -------------------------------------------------


async def _namespace_records(node: FluxProcess) -> list[bytes]:
    consumer = AIOKafkaConsumer(bootstrap_servers=node.bootstrap, group_id=None, enable_auto_commit=False)
    await consumer.start()
    try:
        partition = TopicPartition(node.namespaces_topic, 0)
        consumer.assign([partition])
        await consumer.seek_to_beginning(partition)
        end = (await consumer.end_offsets([partition]))[partition]
        values: list[bytes] = []
        while await consumer.position(partition) < end:
            for messages in (await consumer.getmany(timeout_ms=1000)).values():
                values.extend(m.value or b"" for m in messages)
        return values
    finally:
        await consumer.stop()


def test_namespaces_are_shared_by_every_process_and_survive_restarts(new_flux: NodeFactory) -> None:
    first = new_flux(2, **SECURED_ENV)
    second = new_flux(join=first, **SECURED_ENV)
    name, token = register(first)
    doomed, doomed_token = register(second)
    for node in (first, second):  # each process folds the topic: the other's registration arrives
        node.wait_for(lambda: publish(node, token, f"{name}/x", t=1).status_code == 200, what="token accepted")  # noqa: B023
        node.wait_for(lambda: node.client.get(f"/api/namespaces/{doomed}").status_code == 200, what="shown")  # noqa: B023
    assert second.client.delete(f"/api/namespaces/{doomed}", headers=ADMIN).status_code == 200
    first.wait_for(lambda: publish(first, doomed_token, f"{doomed}/x", t=1).status_code == 401, what="token void")
    assert second.client.post("/api/namespaces", json={"name": name}, headers=ADMIN).status_code == 409

    records = asyncio.run(_namespace_records(first))
    assert records and not any(token.encode() in r or doomed_token.encode() in r for r in records)

    first.stop()
    second.stop()
    first.start()
    assert publish(first, token, f"{name}/after-restart", t=1).status_code == 200
    assert publish(first, doomed_token, f"{doomed}/after-restart", t=1).status_code == 401
    assert first.client.get(f"/api/namespaces/{doomed}").status_code == 404
    first.wait_for(lambda: entity_count(first, name) == 2, what="count kept")


def test_auth_without_a_strong_admin_token_refuses_to_start(tmp_path: Any) -> None:
    env = {**os.environ, "FLUX_AUTH_ENABLED": "true", "FLUX_ADMIN_TOKEN": "short", "KAFKA_BOOTSTRAP_SERVERS": "x:1"}
    done = subprocess.run(
        [sys.executable, "-m", "api.cli", "serve", "--port", "1"],
        env=env,
        cwd=os.getcwd(),
        capture_output=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert b"FLUX_ADMIN_TOKEN of at least 32 characters" in done.stderr
