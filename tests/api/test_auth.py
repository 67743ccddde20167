"""Who may do what with FLUX_AUTH_ENABLED=true: bearer tokens, namespace scopes, private reads, rate limits."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from tests.api.helpers import ADMIN, SECURED, bearer, event, ids, register
from tests.api.memory import MemoryNode, node_settings


async def publish(client: httpx.AsyncClient, token: str | None, entity_id: str, **properties: Any) -> httpx.Response:
    headers = bearer(token) if token else {}
    return await client.post("/api/events", json=event(entity_id, **properties), headers=headers)


# -- writes -----------------------------------------------------------------------------


async def test_every_write_without_a_token_is_401_with_a_bearer_challenge(secured: httpx.AsyncClient) -> None:
    name, _ = await register(secured)
    writes = [
        await secured.post("/api/events", json=event(f"{name}/a", t=1)),
        await secured.post("/api/events/batch", json=[event(f"{name}/a", t=1)]),
        await secured.delete(f"/api/state/entities/{name}/a"),
        await secured.post("/api/state/entities/delete", json={"namespace": name}),
    ]
    for response in writes:
        assert response.status_code == 401, response.text
        assert response.headers["www-authenticate"].startswith("Bearer")
        assert "Bearer" in response.json()["error"]


@pytest.mark.parametrize("authorization", ["Bearer flux_not-a-real-token", "Basic eDp5", "Bearer ", "Bearer"])
async def test_an_unknown_or_malformed_token_is_401(secured: httpx.AsyncClient, authorization: str) -> None:
    name, _ = await register(secured)
    response = await secured.post("/api/events", json=event(f"{name}/a", t=1), headers={"Authorization": authorization})
    assert response.status_code == 401 and response.headers["www-authenticate"] == 'Bearer realm="flux"'
    assert "token" in response.json()["error"] or "Bearer" in response.json()["error"]


async def test_a_namespace_token_writes_its_namespace_and_anybody_reads_it(secured: httpx.AsyncClient) -> None:
    name, token = await register(secured)
    assert (await publish(secured, token, f"{name}/sensor-01", temp=22.5)).status_code == 200
    entity = await secured.get(f"/api/state/entities/{name}/sensor-01")
    assert entity.json()["properties"] == {"temp": 22.5}
    assert ids(await secured.get("/api/state/entities", params={"prefix": f"{name}/"})) == [f"{name}/sensor-01"]


async def test_a_token_of_another_namespace_is_403_naming_both(secured: httpx.AsyncClient) -> None:
    mine, token = await register(secured)
    theirs, _ = await register(secured)
    response = await publish(secured, token, f"{theirs}/x", t=1)
    assert response.status_code == 403
    assert mine in response.json()["error"] and theirs in response.json()["error"]
    assert (await publish(secured, token, "unregistered-ns/x", t=1)).status_code == 403


async def test_ids_without_a_namespace_are_403_for_a_namespace_token(secured: httpx.AsyncClient) -> None:
    _, token = await register(secured)
    response = await publish(secured, token, "no-namespace", t=1)
    assert response.status_code == 403 and "namespace/entity-id" in response.json()["error"]


async def test_a_batch_fails_foreign_events_one_by_one_and_writes_the_rest(secured: httpx.AsyncClient) -> None:
    mine, token = await register(secured)
    theirs, _ = await register(secured)
    batch = [event(f"{mine}/a", n=1), event(f"{theirs}/b", n=2), event("bare", n=3), event(f"{mine}/c", n=4)]
    response = await secured.post("/api/events/batch", json={"events": batch}, headers=bearer(token))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["successful"] == 2 and body["failed"] == 2
    errors = [r["error"] for r in body["results"]]
    assert errors[0] is None and errors[3] is None
    assert errors[1].startswith("events[1]:") and theirs in errors[1]
    assert errors[2].startswith("events[2]:") and "namespace/entity-id" in errors[2]
    assert (await secured.get(f"/api/state/entities/{mine}/c")).json()["properties"] == {"n": 4}
    assert (await secured.get(f"/api/state/entities/{theirs}/b")).status_code == 404


async def test_a_batch_of_only_foreign_events_is_403(secured: httpx.AsyncClient) -> None:
    _, token = await register(secured)
    theirs, _ = await register(secured)
    response = await secured.post("/api/events/batch", json=[event(f"{theirs}/b", n=1)], headers=bearer(token))
    assert response.status_code == 403
    assert response.json()["failed"] == 1


async def test_deletions_are_scoped_to_the_token_namespace(secured: httpx.AsyncClient) -> None:
    mine, token = await register(secured)
    theirs, their_token = await register(secured)
    assert (await publish(secured, token, f"{mine}/a", t=1)).status_code == 200
    assert (await publish(secured, their_token, f"{theirs}/b", t=1)).status_code == 200
    assert (await secured.delete(f"/api/state/entities/{theirs}/b", headers=bearer(token))).status_code == 403
    for body in ({"prefix": mine[:4]}, {"namespace": theirs}, {"prefix": ""}):
        refused = await secured.post("/api/state/entities/delete", json=body, headers=bearer(token))
        assert refused.status_code in (400, 403)
    mixed = await secured.post(
        "/api/state/entities/delete", json={"entity_ids": [f"{mine}/a", f"{theirs}/b"]}, headers=bearer(token)
    )
    assert mixed.status_code == 200, mixed.text
    assert mixed.json()["deleted"] == 1 and mixed.json()["errors"][0]["entity_id"] == f"{theirs}/b"
    assert (await secured.get(f"/api/state/entities/{mine}/a")).status_code == 404
    assert (await secured.get(f"/api/state/entities/{theirs}/b")).status_code == 200
    by_namespace = await secured.post(
        "/api/state/entities/delete", json={"namespace": theirs}, headers=bearer(their_token)
    )
    assert by_namespace.status_code == 200 and by_namespace.json()["deleted"] == 1


async def test_the_admin_token_may_write_any_namespace(secured: httpx.AsyncClient) -> None:
    name, _ = await register(secured)
    response = await secured.post("/api/events", json=event(f"{name}/by-admin", t=1), headers=ADMIN)
    assert response.status_code == 200


# -- limits ------------------------------------------------------------------------------


async def test_a_namespace_over_its_events_per_minute_gets_429_with_retry_after() -> None:
    node = MemoryNode(node_settings(**{**SECURED, "rate_limit_per_minute": 600}))  # 10 events a second
    async with node.client() as secured:
        busy, busy_token = await register(secured)
        calm, calm_token = await register(secured)
        full = [event(f"{busy}/e{i}", i=i) for i in range(599)]
        assert (await secured.post("/api/events/batch", json=full, headers=bearer(busy_token))).status_code == 200
        # 30 more need 29 s/10 of refill: refused however slowly this machine gets from one request to the next
        over = await secured.post("/api/events/batch", json=full[:30], headers=bearer(busy_token))
        assert over.status_code == 429
        assert over.headers["retry-after"] in ("1", "2", "3")
        assert over.json()["retryAfterSeconds"] == int(over.headers["retry-after"])
        assert "FLUX_RATE_LIMIT_PER_MINUTE" in over.json()["error"]
        assert (await publish(secured, calm_token, f"{calm}/e", t=1)).status_code == 200  # others unaffected
        assert (await secured.post("/api/events", json=event(f"{busy}/admin", t=1), headers=ADMIN)).status_code == 200
        await asyncio.sleep(int(over.headers["retry-after"]))
        assert (await publish(secured, busy_token, f"{busy}/later", t=1)).status_code == 200  # refilled


async def test_a_request_larger_than_a_minutes_allowance_is_413(secured: httpx.AsyncClient) -> None:
    name, token = await register(secured)
    batch = [event(f"{name}/e{i}", i=i) for i in range(301)]  # the secured node allows 300 a minute
    response = await secured.post("/api/events/batch", json=batch, headers=bearer(token))
    assert response.status_code == 413 and "split" in response.json()["error"]


async def test_too_many_properties_or_too_long_a_property_name_is_400(secured: httpx.AsyncClient) -> None:
    name, token = await register(secured)
    many = await publish(secured, token, f"{name}/a", **{f"p{i}": i for i in range(21)})
    assert many.status_code == 400 and "21 properties; the limit is 20" in many.json()["error"]
    long_key = await publish(secured, token, f"{name}/a", **{"k" * 17: 1})
    assert long_key.status_code == 400 and "the limit is 16" in long_key.json()["error"]


async def test_a_body_over_the_event_size_limit_is_413() -> None:
    node = MemoryNode(node_settings(**SECURED, max_event_bytes=1000))
    async with node.client() as secured:
        name, token = await register(secured)
        response = await publish(secured, token, f"{name}/a", blob="x" * 2000)
    assert response.status_code == 413 and "limit of 1000 bytes" in response.json()["error"]


# -- reads -------------------------------------------------------------------------------


async def test_reads_are_open_by_default(secured: httpx.AsyncClient) -> None:
    name, token = await register(secured)
    assert (await publish(secured, token, f"{name}/a", t=1)).status_code == 200
    for path in (f"/api/state/entities/{name}/a", "/api/state/entities", "/api/state/namespaces", "/api/events"):
        assert (await secured.get(path)).status_code == 200, path


async def test_private_reads_need_a_token(private: httpx.AsyncClient) -> None:
    name, token = await register(private)
    assert (await publish(private, token, f"{name}/a", t=1)).status_code == 200
    paths = (
        f"/api/state/entities/{name}/a",
        "/api/state/entities",
        "/api/state/namespaces",
        f"/api/namespaces/{name}",
        "/api/events",
    )
    for path in paths:
        response = await private.get(path)
        assert response.status_code == 401, path
        assert "FLUX_PUBLIC_READS=false" in response.json()["error"]
        assert response.headers["www-authenticate"].startswith("Bearer")
    assert (await private.get(f"/api/state/entities/{name}/a", headers=bearer(token))).status_code == 200


async def test_private_reads_are_scoped_to_the_token_namespace(private: httpx.AsyncClient) -> None:
    mine, token = await register(private)
    theirs, their_token = await register(private)
    assert (await publish(private, token, f"{mine}/a", t=1)).status_code == 200
    assert (await publish(private, their_token, f"{theirs}/b", t=1)).status_code == 200
    assert (await private.get(f"/api/state/entities/{theirs}/b", headers=ADMIN)).status_code == 200
    assert (await private.get(f"/api/state/entities/{theirs}/b", headers=bearer(token))).status_code == 403
    assert ids(await private.get("/api/state/entities", headers=bearer(token))) == [f"{mine}/a"]
    for params in ({"prefix": f"{theirs}/"}, {"namespace": theirs}):
        assert (await private.get("/api/state/entities", params=params, headers=bearer(token))).status_code == 403
        assert (await private.get("/api/events", params=params, headers=bearer(token))).status_code == 403
    own_history = await private.get("/api/events", headers=bearer(token))
    assert [e["payload"]["entity_id"] for e in own_history.json()] == [f"{mine}/a"]
    namespaces = await private.get("/api/state/namespaces", headers=bearer(token))
    assert [ns["name"] for ns in namespaces.json()] == [mine]
    assert (await private.get(f"/api/namespaces/{theirs}", headers=bearer(token))).status_code == 403
    admin_view = {ns["name"] for ns in (await private.get("/api/state/namespaces", headers=ADMIN)).json()}
    assert {mine, theirs} <= admin_view
