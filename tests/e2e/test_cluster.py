"""Several Flux nodes of one app share the partitions and answer as one, on a real broker."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import httpx

from tests.conftest import NodeFactory
from tests.flux_process import FluxProcess

T0 = 1_700_000_000_000


def split_between(nodes: list[FluxProcess], partitions: int) -> bool:
    """Every node ready, each serving some partitions, all of them served."""
    served: list[int] = []
    for node in nodes:
        ready = node.client.get("/ready")
        if ready.status_code != 200 or not ready.json()["partitions"]:
            return False
        served += ready.json()["partitions"]
    return sorted(served) == list(range(partitions))


def event(entity_id: str, ts: int, **props: Any) -> dict[str, Any]:
    return {"stream": "s", "source": "c", "timestamp": ts, "payload": {"entity_id": entity_id, "properties": props}}


def test_any_node_answers_a_read_of_any_entity_from_the_node_that_serves_it(new_flux: NodeFactory) -> None:
    first = new_flux(partitions=4)
    second = new_flux(join=first)
    first.wait_for(lambda: split_between([first, second], 4), timeout=90, what="partitions split over both nodes")
    ids = [f"c-{i}" for i in range(24)]
    published = first.client.post(
        "/api/events/batch", params={"wait": "true"}, json=[event(i, T0 + 1, v=1) for i in ids]
    )
    assert published.status_code == 200, published.text
    second.client.post("/api/events/batch", params={"wait": "true"}, json=[event(i, T0 + 2, v=2) for i in ids])

    served_by: dict[str, set[str]] = {first.url: set(), second.url: set()}
    for entity_id in ids:
        answers = [node.entity(entity_id) for node in (first, second)]
        assert [a.status_code for a in answers] == [200, 200], [a.text for a in answers]
        assert (
            answers[0].json()
            == answers[1].json()
            == {
                "id": entity_id,
                "properties": {"v": 2},
                "lastUpdated": "2023-11-14T22:13:20.002Z",
            }
        )
        for node, answer in zip((first, second), answers, strict=True):
            served_by[node.url].add(answer.headers.get("x-flux-served-by", node.url))
    assert served_by[first.url] == served_by[second.url] == {first.url, second.url}, "each node forwarded some"

    def copies_current() -> bool:  # each node keeps a standby copy of the other's partitions
        ready = [node.client.get("/ready").json() for node in (first, second)]
        return all(
            sorted(int(p) for p in mine["standbys"]) == theirs["partitions"] and not any(mine["standbys"].values())
            for mine, theirs in ((ready[0], ready[1]), (ready[1], ready[0]))
        )

    first.wait_for(copies_current, timeout=30, what="standby copies of the other node's partitions, caught up")

    for node in (first, second):  # one entity's history and its past, also from the other node
        past = node.client.get("/api/state/entities/c-3", params={"at": str(T0 + 1)})
        assert past.status_code == 200 and past.json()["properties"] == {"v": 1}
        history = node.client.get("/api/events", params={"entity": "c-3", "since": "0"})
        assert [e["payload"]["properties"] for e in history.json()] == [{"v": 1}, {"v": 2}]
    assert first.entity("c-unknown").status_code == 404 and second.entity("c-unknown").status_code == 404

    odd = ["x%41", "xA", "q?x=1", "h#frag", "with space", "pct%2Fid", "ü%"]  # each is forwarded by one of the nodes
    published = first.client.post(
        "/api/events/batch", params={"wait": "true"}, json=[event(i, T0, odd=n) for n, i in enumerate(odd)]
    )
    assert published.status_code == 200 and published.json()["failed"] == 0, published.text
    for n, entity_id in enumerate(odd):
        served = set()
        for node in (first, second):
            answer = node.client.get("/api/state/entities/" + quote(entity_id, safe="/"))
            assert answer.status_code == 200, (entity_id, node.url, answer.text)
            assert (answer.json()["id"], answer.json()["properties"]) == (entity_id, {"odd": n})
            served.add(answer.headers.get("x-flux-served-by", node.url))
        assert len(served) == 1, f"{entity_id!r}: one node serves it, the other forwarded to it"


ADMIN_TOKEN = "cluster-admin-" + "x" * 40
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
PRIVATE = {
    "FLUX_AUTH_ENABLED": "true",
    "FLUX_PUBLIC_READS": "false",
    "FLUX_ADMIN_TOKEN": ADMIN_TOKEN,
    "FLUX_CLUSTER_SECRET": "cluster-secret-" + "s" * 32,  # the admin's reads travel without its token
}


def pages(node: FluxProcess, path: str, params: dict[str, str], headers: dict[str, str]) -> list[list[Any]]:
    """Every page of a paged list, following its Link headers."""
    found = []
    response = node.client.get(path, params=params, headers=headers)
    while True:
        assert response.status_code == 200, response.text
        assert len(found) < 100, "the Link headers do not come to an end"
        found.append(response.json())
        link = response.headers.get("link")
        if link is None:
            return found
        response = node.client.get(link[1 : link.index(">")], headers=headers)


async def snapshot_ids(node: FluxProcess, pattern: str, token: str) -> list[str]:
    from tests.ws_client import Subscriber

    async with Subscriber(node.url, query=f"?token={token}") as client:
        await client.subscribe(pattern, snapshot=True)
        done = await client.next_of("snapshot_complete")
    ids = [m["entity"]["id"] for m in client.messages if m["type"] == "snapshot"]
    assert done["count"] == len(ids)
    return ids


async def closed_by_rotation(watcher: FluxProcess, rotator: FluxProcess, token: str) -> tuple[int, str]:
    """A tenant's socket on ``watcher`` while ``rotator`` gives the namespace a new token: how it closes."""
    from tests.ws_client import Subscriber

    async with Subscriber(watcher.url, query=f"?token={token}") as client:
        await client.subscribe("fleet/*")
        async with httpx.AsyncClient(base_url=rotator.url, timeout=30) as http:
            rotated = await http.post("/api/namespaces/fleet/token", headers=ADMIN)
        assert rotated.status_code == 200, rotated.text
        return await client.closed()


def test_lists_counts_history_deletes_and_snapshots_span_every_node(new_flux: NodeFactory) -> None:
    """Reads over many partitions gather every node's share, with the caller's token, in one order."""
    import asyncio

    first = new_flux(partitions=6, **PRIVATE)
    second = new_flux(join=first, **PRIVATE)
    first.wait_for(lambda: split_between([first, second], 6), timeout=90, what="partitions split over both nodes")
    created = first.client.post("/api/namespaces", json={"name": "fleet"}, headers=ADMIN)
    assert created.status_code == 201, created.text
    token = created.json()["token"]
    tenant = {"Authorization": f"Bearer {token}"}
    ids = sorted(f"fleet/s-{i:03d}" for i in range(60))
    batch = [event(i, T0 + n, v=n) for n, i in enumerate(ids)] + [event("other-1", T0, v=0)]
    assert first.client.post("/api/events/batch", params={"wait": "true"}, json=batch, headers=ADMIN).status_code == 200
    second.client.post(
        "/api/events/batch", params={"wait": "true"}, json=[event(i, T0 + 100, w=1) for i in ids[:30]], headers=ADMIN
    )

    for node in (first, second):
        listed = pages(node, "/api/state/entities", {"namespace": "fleet", "limit": "7"}, tenant)
        assert [len(p) for p in listed] == [7] * 8 + [4]
        assert [e["id"] for p in listed for e in p] == ids, "every node's share, in id order, no repeats"
        past = pages(node, "/api/state/entities", {"prefix": "fleet/", "at": str(T0 + 50), "limit": "20"}, tenant)
        assert [e["id"] for p in past for e in p] == ids[:51]
        assert all("w" not in e["properties"] for p in past for e in p)
        count = node.client.get("/api/namespaces/fleet", headers=tenant).json()["entityCount"]
        assert count == 60
        history = pages(node, "/api/events", {"namespace": "fleet", "since": "0", "limit": "13"}, tenant)
        keys = [(e["payload"]["entity_id"], e["timestamp"]) for p in history for e in p]
        assert len(keys) == 90 and keys == sorted(keys), "a prefix's history: by id then time, each event once"
        backwards = pages(
            node, "/api/events", {"prefix": "fleet/", "since": "0", "order": "desc", "limit": "50"}, tenant
        )
        assert [(e["payload"]["entity_id"], e["timestamp"]) for p in backwards for e in p] == keys[::-1]
        assert node.client.get("/api/state/entities", params={"prefix": "other"}, headers=tenant).status_code == 403
        assert asyncio.run(snapshot_ids(node, "fleet/*", token)) == ids
        as_admin = pages(node, "/api/state/entities", {"limit": "25"}, ADMIN)  # gathered on the admin's behalf
        assert [e["id"] for p in as_admin for e in p] == sorted([*ids, "other-1"])
        for entity_id in ids[:8]:  # forwarded on the admin's behalf by the node that does not serve it
            assert node.client.get(f"/api/state/entities/{entity_id}", headers=ADMIN).json()["id"] == entity_id
        internal = node.client.get("/api/internal/entities", params={"partitions": "0"}, headers=ADMIN)
        assert internal.status_code == 403, "the internal endpoints answer nodes only"

    doomed = [i for i in ids if i.endswith(("1", "2"))]
    deleted = second.client.post(
        "/api/state/entities/delete", params={"wait": "true"}, json={"entity_ids": doomed}, headers=tenant
    )
    assert deleted.json() == {"deleted": len(doomed), "failed": 0, "errors": []}, deleted.text
    one = first.client.delete(f"/api/state/entities/{ids[0]}", params={"wait": "true"}, headers=tenant)
    assert one.status_code == 200, one.text
    left = [i for i in ids if i not in doomed and i != ids[0]]
    for node in (first, second):
        listed = pages(node, "/api/state/entities", {"prefix": "fleet/"}, tenant)
        assert [e["id"] for p in listed for e in p] == left
    purged = first.client.post(
        "/api/state/entities/delete", params={"wait": "true"}, json={"prefix": "fleet/"}, headers=tenant
    )
    assert purged.json()["deleted"] == len(left)
    assert second.client.get("/api/namespaces/fleet", headers=tenant).json()["entityCount"] == 0

    code, reason = asyncio.run(closed_by_rotation(second, first, token))  # the record reaches the other node
    assert code == 1008 and "namespace 'fleet' was replaced" in reason, reason
