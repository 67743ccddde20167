"""Operations endpoints (/health, /ready, /metrics) and the JSON shape of unknown routes and methods."""

from __future__ import annotations

import httpx

from tests.api.helpers import event
from tests.api.memory import MemoryNode


async def test_health_answers_ok(client: httpx.AsyncClient) -> None:
    response = await client.get("/health")
    assert response.status_code == 200 and response.json() == {"status": "ok"}


async def test_ready_names_the_served_partitions(client: httpx.AsyncClient) -> None:
    response = await client.get("/ready")
    assert response.status_code == 200
    assert response.json() == {
        "status": "ready",
        "broker": True,
        "recovered": True,
        "partitions": [0, 1, 2, 3],
        "standbys": {},
        "detail": "",
    }


async def test_ready_is_503_saying_why_while_recovering_or_without_a_broker(
    node: MemoryNode, client: httpx.AsyncClient
) -> None:
    node.table.recovering = True
    recovering = await client.get("/ready")
    assert recovering.status_code == 503
    assert recovering.json()["status"] == "not_ready" and recovering.json()["recovered"] is False
    assert recovering.json()["partitions"] == [] and "recovery" in recovering.json()["detail"]
    node.table.recovering = False
    node.table.broker = False
    unreachable = await client.get("/ready")
    assert unreachable.status_code == 503 and unreachable.json()["broker"] is False
    assert unreachable.json()["detail"] == "Kafka broker not reachable"


async def test_metrics_are_prometheus_text_counting_published_and_applied_events(client: httpx.AsyncClient) -> None:
    response = await client.post("/api/events/batch", json=[event("m/a", x=1), event("m/b", x=1)])
    assert response.status_code == 200
    metrics = await client.get("/metrics")
    assert metrics.status_code == 200
    assert metrics.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert "# TYPE flux_events_published_total counter" in metrics.text
    values = dict(line.split(" ") for line in metrics.text.splitlines() if line and not line.startswith("#"))
    assert values["flux_events_published_total"] == "2" and values["flux_events_applied_total"] == "2"
    assert values["flux_entities"] == "2" and values["flux_publishers_active"] == "1"


async def test_unknown_route_and_method_get_json_errors(client: httpx.AsyncClient) -> None:
    missing = await client.get("/api/nope")
    assert missing.status_code == 404 and missing.json() == {"error": "Not Found"}
    response = await client.delete("/api/events")
    assert response.status_code == 405 and "error" in response.json()


async def test_a_wrong_method_is_405_naming_every_allowed_method(client: httpx.AsyncClient) -> None:
    response = await client.put("/api/state/entities/u/x", json={})
    assert response.status_code == 405
    assert response.json() == {"error": "Method Not Allowed"}
    assert set(response.headers["allow"].split(", ")) >= {"GET", "DELETE"}
