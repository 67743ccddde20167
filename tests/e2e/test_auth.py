"""Namespaces, bearer tokens and limits (FLUX_AUTH_ENABLED=true), through HTTP and WebSocket on a real broker."""

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
from websockets.exceptions import ConnectionClosed

from tests.conftest import NodeFactory, _node
from tests.flux_process import FluxProcess
from tests.ws_client import Subscriber

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


@pytest.fixture(scope="module")
def private(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FluxProcess]:
    """A node with auth on and FLUX_PUBLIC_READS=false."""
    node = _node(kafka_bootstrap, tmp_path_factory.mktemp("private"), 4, {**SECURED_ENV, "FLUX_PUBLIC_READS": "false"})
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


# -- writes -----------------------------------------------------------------------------


def test_every_write_without_a_token_is_401_with_a_bearer_challenge(secured: FluxProcess) -> None:
    name, _ = register(secured)
    writes = [
        secured.client.post("/api/events", json=event(f"{name}/a", t=1)),
        secured.client.post("/api/events/batch", json=[event(f"{name}/a", t=1)]),
        secured.client.delete(f"/api/state/entities/{name}/a"),
        secured.client.post("/api/state/entities/delete", json={"namespace": name}),
    ]
    for response in writes:
        assert response.status_code == 401, response.text
        assert response.headers["www-authenticate"].startswith("Bearer")
        assert "Bearer" in response.json()["error"]


def test_an_unknown_or_malformed_token_is_401(secured: FluxProcess) -> None:
    name, _ = register(secured)
    assert publish(secured, "flux_not-a-real-token", f"{name}/a", t=1).status_code == 401
    basic = secured.client.post("/api/events", json=event(f"{name}/a", t=1), headers={"Authorization": "Basic eDp5"})
    assert basic.status_code == 401 and "Bearer" in basic.json()["error"]


def test_a_namespace_token_writes_its_namespace_and_anybody_reads_it(secured: FluxProcess) -> None:
    name, token = register(secured)
    assert publish(secured, token, f"{name}/sensor-01", temp=22.5).status_code == 200
    entity = secured.wait_entity(f"{name}/sensor-01", lambda e: e["properties"].get("temp") == 22.5)
    assert entity["id"] == f"{name}/sensor-01"
    listed = secured.client.get("/api/state/entities", params={"prefix": f"{name}/"})
    assert [e["id"] for e in listed.json()] == [f"{name}/sensor-01"]


def test_a_token_of_another_namespace_is_403_naming_both(secured: FluxProcess) -> None:
    mine, token = register(secured)
    theirs, _ = register(secured)
    response = publish(secured, token, f"{theirs}/x", t=1)
    assert response.status_code == 403
    assert mine in response.json()["error"] and theirs in response.json()["error"]
    assert publish(secured, token, "unregistered-ns/x", t=1).status_code == 403


def test_ids_without_a_namespace_are_403_for_a_namespace_token(secured: FluxProcess) -> None:
    _, token = register(secured)
    response = publish(secured, token, "no-namespace", t=1)
    assert response.status_code == 403 and "namespace/entity-id" in response.json()["error"]


def test_a_batch_fails_foreign_events_one_by_one_and_writes_the_rest(secured: FluxProcess) -> None:
    mine, token = register(secured)
    theirs, _ = register(secured)
    batch = [event(f"{mine}/a", n=1), event(f"{theirs}/b", n=2), event("bare", n=3), event(f"{mine}/c", n=4)]
    response = secured.client.post("/api/events/batch", json={"events": batch}, headers=bearer(token))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["successful"] == 2 and body["failed"] == 2
    errors = [r["error"] for r in body["results"]]
    assert errors[0] is None and errors[3] is None
    assert errors[1].startswith("events[1]:") and theirs in errors[1]
    assert errors[2].startswith("events[2]:") and "namespace/entity-id" in errors[2]
    secured.wait_entity(f"{mine}/c", lambda e: e["properties"] == {"n": 4})
    assert secured.entity(f"{theirs}/b").status_code == 404


def test_a_batch_of_only_foreign_events_is_403(secured: FluxProcess) -> None:
    _, token = register(secured)
    theirs, _ = register(secured)
    response = secured.client.post("/api/events/batch", json=[event(f"{theirs}/b", n=1)], headers=bearer(token))
    assert response.status_code == 403
    assert response.json()["failed"] == 1


def test_deletions_are_scoped_to_the_token_namespace(secured: FluxProcess) -> None:
    mine, token = register(secured)
    theirs, their_token = register(secured)
    assert publish(secured, token, f"{mine}/a", t=1).status_code == 200
    assert publish(secured, their_token, f"{theirs}/b", t=1).status_code == 200
    secured.wait_entity(f"{theirs}/b", lambda e: True)
    secured.wait_entity(f"{mine}/a", lambda e: True)
    client = secured.client
    assert client.delete(f"/api/state/entities/{theirs}/b", headers=bearer(token)).status_code == 403
    for body in ({"prefix": mine[:4]}, {"namespace": theirs}, {"prefix": ""}):
        assert client.post("/api/state/entities/delete", json=body, headers=bearer(token)).status_code in (400, 403)
    mixed = client.post(
        "/api/state/entities/delete", json={"entity_ids": [f"{mine}/a", f"{theirs}/b"]}, headers=bearer(token)
    )
    assert mixed.status_code == 200, mixed.text
    assert mixed.json()["deleted"] == 1 and mixed.json()["errors"][0]["entity_id"] == f"{theirs}/b"
    secured.wait_for(lambda: secured.entity(f"{mine}/a").status_code == 404, what="own entity deleted")
    assert secured.entity(f"{theirs}/b").status_code == 200
    by_namespace = client.post("/api/state/entities/delete", json={"namespace": theirs}, headers=bearer(their_token))
    assert by_namespace.status_code == 200 and by_namespace.json()["deleted"] == 1


def test_the_admin_token_may_write_any_namespace(secured: FluxProcess) -> None:
    name, _ = register(secured)
    response = secured.client.post("/api/events", json=event(f"{name}/by-admin", t=1), headers=ADMIN)
    assert response.status_code == 200


# -- namespace administration ----------------------------------------------------------


def test_registering_needs_the_admin_token(secured: FluxProcess) -> None:
    _, token = register(secured)
    assert secured.client.post("/api/namespaces", json={"name": _name()}).status_code == 401
    response = secured.client.post("/api/namespaces", json={"name": _name()}, headers=bearer(token))
    assert response.status_code == 403 and "admin" in response.json()["error"]


def test_registration_answers_id_name_and_a_token_of_256_bits(secured: FluxProcess) -> None:
    name = _name()
    response = secured.client.post("/api/namespaces", json={"name": name}, headers=ADMIN)
    assert response.status_code == 201
    body = response.json()
    assert body["name"] == name and body["namespaceId"].startswith("ns_")
    assert len(body["token"]) >= 43


@pytest.mark.parametrize("name", ["ab", "x" * 33, "Upper", "with space", "slash/ns", 7])
def test_names_breaking_the_rules_are_400_stating_them(secured: FluxProcess, name: object) -> None:
    response = secured.client.post("/api/namespaces", json={"name": name}, headers=ADMIN)
    assert response.status_code == 400
    assert "3-32 characters of a-z, 0-9, '_' and '-'" in response.json()["error"]


def test_a_taken_name_is_409(secured: FluxProcess) -> None:
    name, _ = register(secured)
    response = secured.client.post("/api/namespaces", json={"name": name}, headers=ADMIN)
    assert response.status_code == 409 and name in response.json()["error"]


def test_namespaces_are_listed_and_shown_with_true_entity_counts_and_never_tokens(secured: FluxProcess) -> None:
    name, token = register(secured)
    batch = [event(f"{name}/e{i}", i=i) for i in range(7)]
    assert secured.client.post("/api/events/batch", json=batch, headers=bearer(token)).status_code == 200
    secured.wait_for(
        lambda: secured.client.get(f"/api/namespaces/{name}").json()["entityCount"] == 7, what="seven entities"
    )
    shown = secured.client.get(f"/api/namespaces/{name}").json()
    assert set(shown) == {"namespaceId", "name", "createdAt", "entityCount"}
    listed = {ns["name"]: ns for ns in secured.client.get("/api/state/namespaces").json()}
    assert listed[name] == shown
    assert token not in secured.client.get("/api/state/namespaces").text
    assert secured.client.get("/api/namespaces/no-such-ns").status_code == 404
    gone = {"entity_ids": [f"{name}/e0", f"{name}/e1"]}
    assert secured.client.post("/api/state/entities/delete", json=gone, headers=bearer(token)).status_code == 200
    later = int(time.time() * 1000) + 5_000  # surely newer than the tombstones
    again = [event(f"{name}/e2", i=2), {**event(f"{name}/e0", i=0), "timestamp": later}]  # update, re-creation
    assert secured.client.post("/api/events/batch", json=again, headers=bearer(token)).status_code == 200
    secured.wait_for(
        lambda: secured.client.get(f"/api/namespaces/{name}").json()["entityCount"] == 6, what="count after changes"
    )


def test_rotating_a_token_voids_the_old_one(secured: FluxProcess) -> None:
    name, old = register(secured)
    assert secured.client.post(f"/api/namespaces/{name}/token", headers=bearer(old)).status_code == 403
    response = secured.client.post(f"/api/namespaces/{name}/token", headers=ADMIN)
    assert response.status_code == 200
    new = response.json()["token"]
    assert new != old and response.json()["name"] == name
    assert publish(secured, old, f"{name}/a", t=1).status_code == 401
    assert publish(secured, new, f"{name}/a", t=1).status_code == 200
    assert secured.client.post("/api/namespaces/no-such-ns/token", headers=ADMIN).status_code == 404


def test_deleting_a_namespace_voids_its_token_and_keeps_its_entities_unless_purged(secured: FluxProcess) -> None:
    kept, kept_token = register(secured)
    purged, purged_token = register(secured)
    for name, token in ((kept, kept_token), (purged, purged_token)):
        batch = [event(f"{name}/e{i}", i=i) for i in range(5)]
        assert secured.client.post("/api/events/batch", json=batch, headers=bearer(token)).status_code == 200
        secured.wait_entity(f"{name}/e4", lambda e: True)
    assert secured.client.delete(f"/api/namespaces/{kept}", headers=bearer(kept_token)).status_code == 403
    response = secured.client.delete(f"/api/namespaces/{kept}", headers=ADMIN)
    assert response.status_code == 200 and response.json()["purged"] is False
    response = secured.client.delete(f"/api/namespaces/{purged}", params={"purge": "true"}, headers=ADMIN)
    assert response.json() == {
        "namespaceId": response.json()["namespaceId"],
        "name": purged,
        "purged": True,
        "entitiesDeleted": 5,
    }
    assert publish(secured, kept_token, f"{kept}/e9", t=1).status_code == 401
    assert secured.client.get(f"/api/namespaces/{kept}").status_code == 404
    assert secured.entity(f"{kept}/e0").status_code == 200
    secured.wait_for(
        lambda: secured.client.get("/api/state/entities", params={"prefix": f"{purged}/"}).json() == [],
        what="purged entities gone",
    )
    assert secured.client.delete(f"/api/namespaces/{kept}", headers=ADMIN).status_code == 404


# -- limits ------------------------------------------------------------------------------


def test_a_namespace_over_its_events_per_minute_gets_429_with_retry_after(secured: FluxProcess) -> None:
    busy, busy_token = register(secured)
    calm, calm_token = register(secured)
    full = [event(f"{busy}/e{i}", i=i) for i in range(RATE_LIMIT - 5)]
    assert secured.client.post("/api/events/batch", json=full, headers=bearer(busy_token)).status_code == 200
    over = secured.client.post("/api/events/batch", json=full[:50], headers=bearer(busy_token))
    assert over.status_code == 429
    assert int(over.headers["retry-after"]) >= 1
    assert "FLUX_RATE_LIMIT_PER_MINUTE" in over.json()["error"]
    assert publish(secured, calm_token, f"{calm}/e", t=1).status_code == 200  # other namespaces unaffected
    assert secured.client.post("/api/events", json=event(f"{busy}/admin", t=1), headers=ADMIN).status_code == 200
    time.sleep(int(over.headers["retry-after"]))
    assert publish(secured, busy_token, f"{busy}/later", t=1).status_code == 200  # refilled


def test_a_request_larger_than_a_minutes_allowance_is_413(secured: FluxProcess) -> None:
    name, token = register(secured)
    batch = [event(f"{name}/e{i}", i=i) for i in range(RATE_LIMIT + 1)]
    response = secured.client.post("/api/events/batch", json=batch, headers=bearer(token))
    assert response.status_code == 413 and "split" in response.json()["error"]


def test_too_many_properties_or_too_long_a_property_name_is_400(secured: FluxProcess) -> None:
    name, token = register(secured)
    many = publish(secured, token, f"{name}/a", **{f"p{i}": i for i in range(21)})
    assert many.status_code == 400 and "21 properties; the limit is 20" in many.json()["error"]
    long_key = publish(secured, token, f"{name}/a", **{"k" * 17: 1})
    assert long_key.status_code == 400 and "the limit is 16" in long_key.json()["error"]


def test_a_body_over_the_event_size_limit_is_413(kafka_bootstrap: str, new_flux: NodeFactory) -> None:
    node = new_flux(2, **SECURED_ENV, FLUX_MAX_EVENT_BYTES="1000")
    name, token = register(node)
    response = publish(node, token, f"{name}/a", blob="x" * 2000)
    assert response.status_code == 413


# -- reads -------------------------------------------------------------------------------


def test_reads_and_subscriptions_are_open_by_default(secured: FluxProcess) -> None:
    name, token = register(secured)

    async def scenario() -> None:
        async with Subscriber(secured.url) as ws:
            await ws.subscribe(f"{name}/*")
            await ws.subscribe("*")
            assert publish(secured, token, f"{name}/live", v=1).status_code == 200
            update = await ws.next_of("state_update")
            assert update["entity_id"] == f"{name}/live"

    asyncio.run(scenario())
    assert secured.client.get("/api/state/namespaces").status_code == 200


def test_private_reads_need_a_token(private: FluxProcess) -> None:
    name, token = register(private)
    assert publish(private, token, f"{name}/a", t=1).status_code == 200
    paths = (f"/api/state/entities/{name}/a", "/api/state/entities", "/api/state/namespaces", f"/api/namespaces/{name}")
    for path in paths:
        response = private.client.get(path)
        assert response.status_code == 401, path
        assert "FLUX_PUBLIC_READS=false" in response.json()["error"]
    private.wait_for(
        lambda: private.client.get(f"/api/state/entities/{name}/a", headers=bearer(token)).status_code == 200,
        what="own entity readable with the token",
    )


def test_private_reads_are_scoped_to_the_token_namespace(private: FluxProcess) -> None:
    mine, token = register(private)
    theirs, their_token = register(private)
    assert publish(private, token, f"{mine}/a", t=1).status_code == 200
    assert publish(private, their_token, f"{theirs}/b", t=1).status_code == 200
    private.wait_for(
        lambda: private.client.get(f"/api/state/entities/{theirs}/b", headers=ADMIN).status_code == 200,
        what="their entity",
    )
    client = private.client
    assert client.get(f"/api/state/entities/{theirs}/b", headers=bearer(token)).status_code == 403
    own_list = private.wait_for(
        lambda: client.get("/api/state/entities", headers=bearer(token)).json(), what="own list"
    )
    assert [e["id"] for e in own_list] == [f"{mine}/a"]
    assert client.get("/api/state/entities", params={"prefix": f"{theirs}/"}, headers=bearer(token)).status_code == 403
    assert client.get("/api/state/entities", params={"namespace": theirs}, headers=bearer(token)).status_code == 403
    assert [ns["name"] for ns in client.get("/api/state/namespaces", headers=bearer(token)).json()] == [mine]
    assert client.get(f"/api/namespaces/{theirs}", headers=bearer(token)).status_code == 403
    admin_view = {ns["name"] for ns in client.get("/api/state/namespaces", headers=ADMIN).json()}
    assert {mine, theirs} <= admin_view


def test_private_websocket_without_a_token_is_closed_with_1008_and_the_reason(private: FluxProcess) -> None:
    async def scenario() -> tuple[int, str]:
        async with Subscriber(private.url) as ws:
            with pytest.raises(ConnectionClosed):
                await ws.recv(timeout=10)
            return ws.ws.close_code, ws.ws.close_reason

    code, reason = asyncio.run(scenario())
    assert code == 1008 and "Bearer" in reason


def test_private_websocket_is_scoped_to_the_token_namespace(private: FluxProcess) -> None:
    mine, token = register(private)
    theirs, their_token = register(private)

    async def scenario() -> None:
        async with (
            Subscriber(private.url, query=f"?token={token}") as by_query,
            Subscriber(private.url, headers=bearer(token)) as by_header,
        ):
            for ws in (by_query, by_header):
                for pattern in ("*", f"{theirs}/*", f"{theirs}/b", mine[:5] + "*"):
                    await ws.send({"type": "subscribe", "entity_id": pattern})
                    refusal = await ws.next_of("error")
                    assert refusal["entity_id"] == pattern and "can read ids starting with" in refusal["error"]
                await ws.subscribe(f"{mine}/*")
            assert publish(private, their_token, f"{theirs}/b", v=1).status_code == 200
            assert publish(private, token, f"{mine}/a", v=2).status_code == 200
            for ws in (by_query, by_header):
                update = await ws.next_of("state_update")
                assert update["entity_id"] == f"{mine}/a"  # theirs never arrives, though it came first

    asyncio.run(scenario())


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
    first.wait_for(lambda: first.client.get(f"/api/namespaces/{name}").json()["entityCount"] == 2, what="count kept")


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
