"""The OpenAPI document: every endpoint with its schemas, the configured maxima, and security as configured."""

from __future__ import annotations

import json
import re
from typing import Any

import httpx

from tests.api.helpers import SECURED
from tests.api.memory import MemoryNode, node_settings

WRITES_AND_ADMIN = [
    ("/api/events", "post"),
    ("/api/events/batch", "post"),
    ("/api/state/entities/{entity_id}", "delete"),
    ("/api/state/entities/delete", "post"),
    ("/api/namespaces", "post"),
    ("/api/namespaces/{name}/token", "post"),
    ("/api/namespaces/{name}", "delete"),
    ("/api/admin/replay", "post"),
    ("/api/admin/replay", "get"),
    ("/api/admin/replay/{job_id}", "get"),
    ("/api/admin/replay/{job_id}", "delete"),
]
READS = [
    ("/api/state/entities", "get"),
    ("/api/state/entities/{entity_id}", "get"),
    ("/api/state/namespaces", "get"),
    ("/api/namespaces/{name}", "get"),
    ("/api/events", "get"),
]
OPERATIONS = [("/health", "get"), ("/ready", "get"), ("/metrics", "get")]
BODIES = ["/api/events", "/api/events/batch", "/api/state/entities/delete", "/api/namespaces", "/api/admin/replay"]


async def spec_of(node: MemoryNode) -> dict[str, Any]:
    async with node.client() as client:
        response = await client.get("/openapi.json")
    assert response.status_code == 200
    return response.json()  # type: ignore[no-any-return]


def maximum(spec: dict[str, Any], path: str, method: str, name: str) -> int:
    (parameter,) = [p for p in spec["paths"][path][method]["parameters"] if p["name"] == name]
    schema = parameter["schema"]
    return int(next(option["maximum"] for option in schema.get("anyOf", [schema]) if "maximum" in option))


async def test_openapi_documents_every_endpoint_with_schemas(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    paths = spec["paths"]
    for path, method in WRITES_AND_ADMIN + READS + OPERATIONS:
        assert method in paths[path], path
    assert not [path for path in paths if path.startswith("/api/internal")], "internal endpoints are not public"
    for path in BODIES:
        operation = paths[path]["post"]
        assert operation["requestBody"]["required"] is True, path
        assert list(operation["requestBody"]["content"]) == ["application/json"], path
        unsupported = operation["responses"]["415"]["content"]["application/json"]["schema"]
        assert unsupported == {"$ref": "#/components/schemas/ErrorOut"}, path
    schemas = set(spec["components"]["schemas"])
    assert {"EventIn", "BatchIn", "BatchDeleteIn", "Entity", "BatchOut", "ErrorOut"} <= schemas
    refs = re.findall(r'"#/components/schemas/([^"]+)"', json.dumps(spec))
    assert refs and set(refs) <= schemas
    assert maximum(spec, "/api/state/entities", "get", "limit") == 10_000  # FLUX_LIST_MAX_LIMIT
    assert maximum(spec, "/api/events", "post", "wait_timeout_ms") == 60_000  # FLUX_WAIT_MAX_TIMEOUT_MS
    properties = spec["components"]["schemas"]["EventPayload"]["properties"]["properties"]
    assert properties["maxProperties"] == 1_000  # FLUX_MAX_PROPERTIES_PER_EVENT
    assert properties["propertyNames"] == {"maxLength": 256}  # FLUX_MAX_PROPERTY_KEY_LENGTH
    bare_batch = paths["/api/events/batch"]["post"]["requestBody"]["content"]["application/json"]["schema"]["oneOf"]
    assert {option.get("maxItems") for option in bare_batch} == {None, 100_000}  # FLUX_MAX_BATCH_EVENTS
    assert "securitySchemes" not in spec["components"]  # FLUX_AUTH_ENABLED=false: nothing is checked
    assert not [(p, m) for p, methods in paths.items() for m, op in methods.items() if "security" in op]
    assert (await client.get("/docs")).status_code == 200


async def test_openapi_maxima_are_the_configured_ones() -> None:
    settings = node_settings(
        list_max_limit=500,
        wait_max_timeout_ms=7_000,
        max_batch_events=250,
        max_properties_per_event=12,
        max_property_key_length=24,
        max_entity_id_length=64,
        max_stream_source_length=32,
    )
    spec = await spec_of(MemoryNode(settings))
    assert maximum(spec, "/api/state/entities", "get", "limit") == 500
    for path, method in [
        ("/api/events", "post"),
        ("/api/events/batch", "post"),
        ("/api/state/entities/delete", "post"),
    ]:
        assert maximum(spec, path, method, "wait_timeout_ms") == 7_000, path
    for path, method, name in [("/api/events", "get", "since"), ("/api/state/entities/{entity_id}", "get", "at")]:
        assert maximum(spec, path, method, name) == 253_402_300_799_999, name
    schemas = spec["components"]["schemas"]
    payload = schemas["EventPayload"]["properties"]
    assert payload["entity_id"]["maxLength"] == 64
    assert payload["properties"]["maxProperties"] == 12 and payload["properties"]["propertyNames"] == {"maxLength": 24}
    assert schemas["BatchIn"]["properties"]["events"]["maxItems"] == 250
    for kind in ("UpsertEvent", "DeleteEvent"):
        assert [schemas[kind]["properties"][field]["maxLength"] for field in ("stream", "source")] == [32, 32]


async def test_openapi_declares_bearer_security_where_it_is_checked() -> None:
    for public_reads in (True, False):
        spec = await spec_of(MemoryNode(node_settings(**SECURED, public_reads=public_reads)))
        assert spec["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
        paths = spec["paths"]
        for path, method in WRITES_AND_ADMIN:
            assert paths[path][method]["security"] == [{"bearerAuth": []}], (path, method)
            assert {"401", "403"} <= set(paths[path][method]["responses"]), (path, method)
        for path, method in READS:
            assert ("security" in paths[path][method]) is not public_reads, (path, method, public_reads)
        for path, method in OPERATIONS:
            assert "security" not in paths[path][method], path
