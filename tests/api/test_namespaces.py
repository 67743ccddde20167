"""Namespace administration (register, list, show, rotate a token, delete, purge) and its answers."""

from __future__ import annotations

import httpx
import pytest

from flux.model.namespaces import NAME_RULE
from tests.api.helpers import ADMIN, assert_refused, bearer, event, ids, new_name, register


async def test_registering_needs_the_admin_token(secured: httpx.AsyncClient) -> None:
    _, token = await register(secured)
    assert (await secured.post("/api/namespaces", json={"name": new_name()})).status_code == 401
    response = await secured.post("/api/namespaces", json={"name": new_name()}, headers=bearer(token))
    assert response.status_code == 403 and "admin" in response.json()["error"]


async def test_registration_answers_id_name_and_a_token_of_256_bits(secured: httpx.AsyncClient) -> None:
    name = new_name()
    response = await secured.post("/api/namespaces", json={"name": name}, headers=ADMIN)
    assert response.status_code == 201
    body = response.json()
    assert set(body) == {"namespaceId", "name", "token"}
    assert body["name"] == name and body["namespaceId"].startswith("ns_")
    assert len(body["token"]) >= 43


@pytest.mark.parametrize("name", ["ab", "x" * 33, "Upper", "with space", "slash/ns", 7])
async def test_names_breaking_the_rules_are_400_stating_them(secured: httpx.AsyncClient, name: object) -> None:
    assert_refused(await secured.post("/api/namespaces", json={"name": name}, headers=ADMIN), 400, NAME_RULE)


@pytest.mark.parametrize(
    ("raw", "status", "message"),
    [
        (b"[]", 400, 'body must be {"name": "..."}'),
        (b'{"title": "x"}', 400, 'body must be {"name": "..."}'),
        (b"{", 400, "malformed JSON"),
        (b'{"name": "' + b"x" * 5000 + b'"}', 413, "limit of 4096 bytes"),
    ],
)
async def test_a_registration_body_that_is_not_a_name_is_refused(
    secured: httpx.AsyncClient, raw: bytes, status: int, message: str
) -> None:
    headers = {**ADMIN, "content-type": "application/json"}
    assert_refused(await secured.post("/api/namespaces", content=raw, headers=headers), status, message)


async def test_a_taken_name_is_409(secured: httpx.AsyncClient) -> None:
    name, _ = await register(secured)
    response = await secured.post("/api/namespaces", json={"name": name}, headers=ADMIN)
    assert response.status_code == 409 and name in response.json()["error"]


async def test_namespaces_are_listed_and_shown_with_their_entity_counts_and_never_tokens(
    secured: httpx.AsyncClient,
) -> None:
    name, token = await register(secured)
    other, _ = await register(secured)
    batch = [event(f"{name}/e{i}", i=i) for i in range(7)]
    assert (await secured.post("/api/events/batch", json=batch, headers=bearer(token))).status_code == 200
    shown = (await secured.get(f"/api/namespaces/{name}")).json()
    assert set(shown) == {"namespaceId", "name", "createdAt", "entityCount"}
    assert shown["name"] == name and shown["entityCount"] == 7
    listing = await secured.get("/api/state/namespaces")
    listed = {ns["name"]: ns for ns in listing.json()}
    assert list(listed) == sorted([name, other]) and listed[name] == shown and listed[other]["entityCount"] == 0
    assert token not in listing.text
    missing = await secured.get("/api/namespaces/no-such-ns")
    assert missing.status_code == 404 and missing.json() == {"error": "no namespace named 'no-such-ns'"}


async def test_rotating_a_token_voids_the_old_one(secured: httpx.AsyncClient) -> None:
    name, old = await register(secured)
    assert (await secured.post(f"/api/namespaces/{name}/token", headers=bearer(old))).status_code == 403
    response = await secured.post(f"/api/namespaces/{name}/token", headers=ADMIN)
    assert response.status_code == 200
    new = response.json()["token"]
    assert new != old and response.json()["name"] == name
    write = event(f"{name}/a", t=1)
    assert (await secured.post("/api/events", json=write, headers=bearer(old))).status_code == 401
    assert (await secured.post("/api/events", json=write, headers=bearer(new))).status_code == 200
    assert (await secured.post("/api/namespaces/no-such-ns/token", headers=ADMIN)).status_code == 404


async def test_deleting_a_namespace_voids_its_token_and_keeps_its_entities_unless_purged(
    secured: httpx.AsyncClient,
) -> None:
    kept, kept_token = await register(secured)
    purged, purged_token = await register(secured)
    for name, token in ((kept, kept_token), (purged, purged_token)):
        batch = [event(f"{name}/e{i}", i=i) for i in range(5)]
        assert (await secured.post("/api/events/batch", json=batch, headers=bearer(token))).status_code == 200
    assert (await secured.delete(f"/api/namespaces/{kept}", headers=bearer(kept_token))).status_code == 403
    response = await secured.delete(f"/api/namespaces/{kept}", headers=ADMIN)
    assert response.status_code == 200 and response.json()["purged"] is False
    response = await secured.delete(f"/api/namespaces/{purged}", params={"purge": "true"}, headers=ADMIN)
    assert response.json() == {
        "namespaceId": response.json()["namespaceId"],
        "name": purged,
        "purged": True,
        "entitiesDeleted": 5,
    }
    write = event(f"{kept}/e9", t=1)
    assert (await secured.post("/api/events", json=write, headers=bearer(kept_token))).status_code == 401
    assert (await secured.get(f"/api/namespaces/{kept}")).status_code == 404
    assert (await secured.get(f"/api/state/entities/{kept}/e0")).status_code == 200
    assert ids(await secured.get("/api/state/entities", params={"prefix": f"{purged}/"})) == []
    assert (await secured.delete(f"/api/namespaces/{kept}", headers=ADMIN)).status_code == 404


async def test_a_new_namespace_starts_empty_a_name_whose_entities_remain_is_refused_until_purged(
    secured: httpx.AsyncClient,
) -> None:
    name, token = await register(secured)
    batch = [event(f"{name}/e{i}", i=i) for i in range(3)]
    assert (await secured.post("/api/events/batch", json=batch, headers=bearer(token))).status_code == 200
    assert (await secured.delete(f"/api/namespaces/{name}", headers=ADMIN)).status_code == 200  # no purge
    again = await secured.post("/api/namespaces", json={"name": name}, headers=ADMIN)
    assert_refused(again, 409, f"3 entities '{name}/...' exist")
    assert f"DELETE /api/namespaces/{name}?purge=true" in again.json()["error"]
    assert (await secured.get(f"/api/state/entities/{name}/e0")).status_code == 200, "nothing was registered"
    purged = await secured.delete(f"/api/namespaces/{name}", params={"purge": "true"}, headers=ADMIN)
    assert purged.json() == {"namespaceId": None, "name": name, "purged": True, "entitiesDeleted": 3}
    _, new_token = await register(secured, name)
    assert new_token != token
    assert (await secured.get(f"/api/namespaces/{name}")).json()["entityCount"] == 0
    assert ids(await secured.get("/api/state/entities", params={"namespace": name})) == []


async def test_entities_the_admin_wrote_under_a_free_name_keep_it_from_being_registered(
    secured: httpx.AsyncClient,
) -> None:
    name = new_name()
    assert (await secured.post("/api/events", json=event(f"{name}/seeded", v=1), headers=ADMIN)).status_code == 200
    assert_refused(await secured.post("/api/namespaces", json={"name": name}, headers=ADMIN), 409, "1 entities")
    nothing = await secured.delete(f"/api/namespaces/{new_name()}", params={"purge": "true"}, headers=ADMIN)
    assert_refused(nothing, 404, "no entities")


async def test_namespaces_need_no_token_with_auth_off(client: httpx.AsyncClient) -> None:
    created = await client.post("/api/namespaces", json={"name": "open-ns"})
    assert created.status_code == 201
    assert (await client.post("/api/namespaces/open-ns/token")).status_code == 200
    assert (await client.delete("/api/namespaces/open-ns")).status_code == 200
