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
        "catching_up": {},
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
    values = dict(line.rsplit(" ", 1) for line in metrics.text.splitlines() if line and not line.startswith("#"))
    assert float(values["flux_events_published_total"]) == 2 and float(values["flux_events_applied_total"]) == 2
    assert float(values["flux_entities"]) == 2 and float(values["flux_publishers_active"]) == 1


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


async def test_metrics_negotiate_openmetrics_and_include_process_metrics(client: httpx.AsyncClient) -> None:
    plain = await client.get("/metrics", headers={"accept": "text/plain"})
    assert plain.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert "# EOF" not in plain.text and "python_gc_collections_total" in plain.text
    asked = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"  # Prometheus's
    answer = await client.get("/metrics", headers={"accept": asked})
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("application/openmetrics-text; version=1.0.0")
    assert answer.text.endswith("# EOF\n") and "# TYPE flux_events_published counter" in answer.text
    assert "flux_events_published_total 0.0" in answer.text


async def test_requests_are_timed_by_route_template_method_and_status(client: httpx.AsyncClient) -> None:
    assert (await client.post("/api/events", json=event("t/a", x=1))).status_code == 200
    assert (await client.post("/api/events/batch", json=[event("t/b", x=1)])).status_code == 200
    assert (await client.post("/api/events", json={"stream": "x"})).status_code == 400
    for entity in ("t/a", "t/b", "t/none"):
        await client.get(f"/api/state/entities/{entity}")
    await client.get("/api/nope/1")
    text = (await client.get("/metrics")).text
    values = dict(line.rsplit(" ", 1) for line in text.splitlines() if line and not line.startswith("#"))

    def count(route: str, method: str, status: int) -> float:
        labels = f'method="{method}",route="{route}",status="{status}"'
        return float(values.get(f"flux_http_request_duration_ms_count{{{labels}}}", 0))

    entity_route = "/api/state/entities/{entity_id:path}"
    assert count(entity_route, "GET", 200) == 2 and count(entity_route, "GET", 404) == 1
    assert count("/api/events", "POST", 200) == 1 and count("/api/events", "POST", 400) == 1
    assert count("/api/events/batch", "POST", 200) == 1 and count("unmatched", "GET", 404) == 1
    assert float(values["flux_publish_latency_ms_count"]) == 2, "successful publishes only"
    assert not any("t/a" in name or "/api/nope" in name for name in values), "templates, never paths"
