"""Several Flux nodes of one app share the partitions and answer as one, on a real broker."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import NodeFactory
from tests.flux_process import FluxProcess

pytestmark = pytest.mark.e2e

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

    for node in (first, second):  # one entity's history and its past, also from the other node
        past = node.client.get("/api/state/entities/c-3", params={"at": str(T0 + 1)})
        assert past.status_code == 200 and past.json()["properties"] == {"v": 1}
        history = node.client.get("/api/events", params={"entity": "c-3", "since": "0"})
        assert [e["payload"]["properties"] for e in history.json()] == [{"v": 1}, {"v": 2}]
    assert first.entity("c-unknown").status_code == 404 and second.entity("c-unknown").status_code == 404
