"""Reading state over HTTP: one entity, lists with filters and pagination, operations endpoints."""

from __future__ import annotations

import json
import re

import pytest


def test_entity_ids_with_slashes_are_served_raw_and_percent_encoded(flux, uid):
    flux.publish(f"acme-{uid}/sensor-01", {"t": 1})
    raw = flux.wait_entity(f"acme-{uid}/sensor-01", lambda e: True)
    encoded = flux.client.get(f"/api/state/entities/acme-{uid}%2Fsensor-01").json()
    assert raw == encoded and raw["id"] == f"acme-{uid}/sensor-01"


def test_unknown_entity_is_404_with_json_error(flux):
    response = flux.entity("no-such-entity")
    assert response.status_code == 404
    assert response.json() == {"error": "Entity not found"}


def test_list_is_in_id_order_with_prefix_and_namespace_filters(flux, uid):
    ids = [f"{uid}/host-{i:02d}" for i in range(12)] + [f"{uid}/db-1", f"{uid}x/host-99"]
    flux.client.post(
        "/api/events/batch",
        json=[{"stream": "s", "source": "a", "payload": {"entity_id": i, "properties": {"n": i}}} for i in ids],
    )
    flux.wait_for(lambda: len(flux.client.get(f"/api/state/entities?prefix={uid}").json()) == 14, what="14 entities")
    everything = [e["id"] for e in flux.client.get(f"/api/state/entities?prefix={uid}").json()]
    assert everything == sorted(ids)
    in_namespace = [e["id"] for e in flux.client.get(f"/api/state/entities?namespace={uid}").json()]
    assert in_namespace == sorted(i for i in ids if i.startswith(f"{uid}/"))
    combined = [e["id"] for e in flux.client.get(f"/api/state/entities?namespace={uid}&prefix=host-").json()]
    assert combined == [f"{uid}/host-{i:02d}" for i in range(12)]
    full_prefix = [e["id"] for e in flux.client.get(f"/api/state/entities?namespace={uid}&prefix={uid}/db").json()]
    assert full_prefix == [f"{uid}/db-1"]


def test_pagination_walks_every_entity_once_following_link_headers(flux, uid):
    ids = [f"page-{uid}-{i:03d}" for i in range(25)]
    flux.client.post(
        "/api/events/batch",
        json=[{"stream": "s", "source": "a", "payload": {"entity_id": i, "properties": {}}} for i in ids],
    )
    flux.wait_for(
        lambda: len(flux.client.get(f"/api/state/entities?prefix=page-{uid}").json()) == 25, what="25 entities"
    )
    seen: list[str] = []
    url = f"/api/state/entities?prefix=page-{uid}&limit=10"
    pages = 0
    while url:
        response = flux.client.get(url)
        seen += [e["id"] for e in response.json()]
        pages += 1
        link = response.headers.get("link")
        url = link[1 : link.index(">")] if link else None
    assert seen == ids and pages == 3
    assert flux.client.get(f"/api/state/entities?prefix=page-{uid}&limit=10&offset=20").json()[0]["id"] == ids[20]


@pytest.mark.parametrize("query", ["limit=0", "limit=abc", "offset=-1", "limit=100000", "namespace="])
def test_bad_list_parameters_get_422(flux, query):
    response = flux.client.get(f"/api/state/entities?{query}")
    assert response.status_code == 422
    assert response.json()["error"]


def test_health_ready_and_prometheus_metrics(flux, uid):
    assert flux.client.get("/health").json() == {"status": "ok"}
    ready = flux.client.get("/ready").json()
    assert ready["status"] == "ready" and ready["broker"] and ready["recovered"]
    assert ready["partitions"] == [0, 1, 2, 3]
    assert ready["standbys"] == {}, "one node: nobody to copy"
    flux.publish(f"metrics-{uid}", {"x": 1})
    flux.wait_entity(f"metrics-{uid}", lambda e: True)
    text = flux.client.get("/metrics").text
    assert "# TYPE flux_events_published_total counter" in text
    values = dict(line.split(" ") for line in text.splitlines() if line and not line.startswith("#"))
    assert int(values["flux_events_applied_total"]) >= 1 and int(values["flux_entities"]) >= 1


def test_openapi_documents_every_endpoint_with_schemas(flux):
    spec = flux.client.get("/openapi.json").json()
    paths = spec["paths"]
    for path, method in [
        ("/api/events", "post"),
        ("/api/events/batch", "post"),
        ("/api/state/entities", "get"),
        ("/api/state/entities/{entity_id}", "get"),
        ("/api/state/entities/{entity_id}", "delete"),
        ("/api/state/entities/delete", "post"),
        ("/health", "get"),
        ("/ready", "get"),
        ("/metrics", "get"),
        ("/api/namespaces", "post"),
        ("/api/state/namespaces", "get"),
        ("/api/namespaces/{name}", "get"),
        ("/api/namespaces/{name}", "delete"),
        ("/api/namespaces/{name}/token", "post"),
    ]:
        assert method in paths[path], path
    for path in ("/api/events", "/api/events/batch", "/api/state/entities/delete"):
        assert paths[path]["post"]["requestBody"]["required"] is True, path
    schemas = set(spec["components"]["schemas"])
    assert {"EventIn", "BatchIn", "BatchDeleteIn", "Entity", "BatchOut", "ErrorOut"} <= schemas
    refs = re.findall(r'"#/components/schemas/([^"]+)"', json.dumps(spec))
    assert refs and set(refs) <= schemas

    def maximum(path: str, method: str, name: str) -> int:
        (parameter,) = [p for p in paths[path][method]["parameters"] if p["name"] == name]
        return next(o["maximum"] for o in parameter["schema"].get("anyOf", [parameter["schema"]]) if "maximum" in o)

    assert maximum("/api/state/entities", "get", "limit") == 10_000  # FLUX_LIST_MAX_LIMIT
    assert maximum("/api/events", "post", "wait_timeout_ms") == 60_000  # FLUX_WAIT_MAX_TIMEOUT_MS
    properties = spec["components"]["schemas"]["EventPayload"]["properties"]["properties"]
    assert properties["maxProperties"] == 1_000  # FLUX_MAX_PROPERTIES_PER_EVENT
    assert properties["propertyNames"] == {"maxLength": 256}  # FLUX_MAX_PROPERTY_KEY_LENGTH
    bare_batch = paths["/api/events/batch"]["post"]["requestBody"]["content"]["application/json"]["schema"]["oneOf"]
    assert {option.get("maxItems") for option in bare_batch} == {None, 100_000}  # FLUX_MAX_BATCH_EVENTS
    assert "securitySchemes" not in spec["components"]  # FLUX_AUTH_ENABLED=false: nothing is checked
    assert "security" not in paths["/api/events"]["post"]
    assert flux.client.get("/docs").status_code == 200


def test_a_wrong_method_is_405_naming_every_allowed_method(flux, uid):
    response = flux.client.put(f"/api/state/entities/{uid}/x", json={})
    assert response.status_code == 405
    assert response.json() == {"error": "Method Not Allowed"}
    assert set(response.headers["allow"].split(", ")) >= {"GET", "DELETE"}
