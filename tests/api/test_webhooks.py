"""The webhook routes: register, list, show, delete, resume, deliveries; who may do what; errors; OpenAPI."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from flux.model.webhooks import Attempt, Pause, Report, pause_record, report_record
from tests.api.helpers import ADMIN, SECURED, assert_refused, bearer, register
from tests.api.memory import MemoryNode, node_settings

URL = "http://127.0.0.1:9/hook"


@pytest.fixture
def hooks_node() -> MemoryNode:
    """Auth on, private targets allowed (the tests' receivers are local)."""
    return MemoryNode(node_settings(**SECURED, webhook_allow_private=True))


@pytest.fixture
async def hooks(hooks_node: MemoryNode) -> AsyncIterator[httpx.AsyncClient]:
    async with hooks_node.client() as http:
        yield http


async def test_registering_answers_the_id_and_a_generated_secret(hooks: httpx.AsyncClient) -> None:
    response = await hooks.post("/api/webhooks", json={"url": URL, "entity_id": "acme/*"}, headers=ADMIN)
    assert response.status_code == 201, response.text
    body = response.json()
    assert set(body) == {"id", "url", "entity_id", "secret"}
    assert body["id"].startswith("wh_") and body["secret"].startswith("whsec_") and len(body["secret"]) > 40
    assert body["url"] == URL and body["entity_id"] == "acme/*"
    assert response.headers["location"] == f"/api/webhooks/{body['id']}"


async def test_a_given_secret_is_kept_and_never_shown_again(hooks: httpx.AsyncClient) -> None:
    secret = "my-receiver-secret-123"
    body = {"url": URL, "entity_id": "*", "secret": secret}
    created = (await hooks.post("/api/webhooks", json=body, headers=ADMIN)).json()
    assert created["secret"] == secret
    shown = (await hooks.get(f"/api/webhooks/{created['id']}", headers=ADMIN)).json()
    assert "secret" not in shown and secret not in str(shown)
    assert shown["status"] == "active" and shown["paused"] is None and shown["namespace"] is None
    listed = (await hooks.get("/api/webhooks", headers=ADMIN)).json()
    assert [hook["id"] for hook in listed] == [created["id"]]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"entity_id": "*"}, 'body must be {"url"'),
        ({"url": URL}, 'body must be {"url"'),
        ({"url": URL, "entity_id": "*", "extra": 1}, "unknown fields ['extra']"),
        ({"url": "ftp://127.0.0.1/x", "entity_id": "*"}, "http or https"),
        ({"url": "not a url", "entity_id": "*"}, "http or https"),
        ({"url": URL, "entity_id": "a*b*"}, "'*' only at its end"),
        ({"url": URL, "entity_id": ""}, "entity_id must be"),
        ({"url": URL, "entity_id": "*", "secret": "short"}, "secret must be"),
    ],
)
async def test_invalid_registrations_are_400_saying_why(
    hooks: httpx.AsyncClient, body: dict[str, object], message: str
) -> None:
    assert_refused(await hooks.post("/api/webhooks", json=body, headers=ADMIN), 400, message)


async def test_malformed_json_is_400_and_another_type_415(hooks: httpx.AsyncClient) -> None:
    headers = {**ADMIN, "content-type": "application/json"}
    assert_refused(await hooks.post("/api/webhooks", content=b"{", headers=headers), 400, "malformed JSON")
    response = await hooks.post("/api/webhooks", content=b"{}", headers={**ADMIN, "content-type": "text/plain"})
    assert response.status_code == 415


async def test_private_targets_are_refused_by_default() -> None:
    node = MemoryNode(node_settings(**SECURED))
    async with node.client() as http:
        for url in ("http://127.0.0.1:8080/x", "http://10.0.0.1/x", "http://[::1]/x", "http://localhost/x"):
            response = await http.post("/api/webhooks", json={"url": url, "entity_id": "*"}, headers=ADMIN)
            assert_refused(response, 400, "FLUX_WEBHOOK_ALLOW_PRIVATE")


async def test_without_a_token_it_is_401(hooks: httpx.AsyncClient) -> None:
    assert (await hooks.post("/api/webhooks", json={"url": URL, "entity_id": "*"})).status_code == 401
    assert (await hooks.get("/api/webhooks")).status_code == 401


async def test_a_namespace_token_registers_patterns_inside_its_namespace_only(hooks: httpx.AsyncClient) -> None:
    name, token = await register(hooks)
    other, other_token = await register(hooks)
    for pattern in (f"{name}/*", f"{name}/sensor-1", f"{name}/s*"):
        response = await hooks.post("/api/webhooks", json={"url": URL, "entity_id": pattern}, headers=bearer(token))
        assert response.status_code == 201, response.text
    for pattern in ("*", f"{other}/*", f"{name}*", "plain-id"):
        response = await hooks.post("/api/webhooks", json={"url": URL, "entity_id": pattern}, headers=bearer(token))
        assert_refused(response, 403, "")
    mine = (await hooks.get("/api/webhooks", headers=bearer(token))).json()
    assert len(mine) == 3 and {hook["namespace"] for hook in mine} == {name}
    assert (await hooks.get("/api/webhooks", headers=bearer(other_token))).json() == []
    assert len((await hooks.get("/api/webhooks", headers=ADMIN)).json()) == 3
    hook_id = mine[0]["id"]
    for method, path in (
        ("GET", f"/api/webhooks/{hook_id}"),
        ("GET", f"/api/webhooks/{hook_id}/deliveries"),
        ("POST", f"/api/webhooks/{hook_id}/resume"),
        ("DELETE", f"/api/webhooks/{hook_id}"),
    ):
        assert_refused(await hooks.request(method, path, headers=bearer(other_token)), 403, "another namespace")
    assert (await hooks.delete(f"/api/webhooks/{hook_id}", headers=bearer(token))).status_code == 200


async def test_unknown_webhooks_are_404(hooks: httpx.AsyncClient) -> None:
    for method, path in (
        ("GET", "/api/webhooks/wh_nope"),
        ("GET", "/api/webhooks/wh_nope/deliveries"),
        ("POST", "/api/webhooks/wh_nope/resume"),
        ("DELETE", "/api/webhooks/wh_nope"),
    ):
        assert_refused(await hooks.request(method, path, headers=ADMIN), 404, "no webhook with id 'wh_nope'")


async def test_a_deleted_webhook_is_gone(hooks: httpx.AsyncClient, hooks_node: MemoryNode) -> None:
    created = (await hooks.post("/api/webhooks", json={"url": URL, "entity_id": "*"}, headers=ADMIN)).json()
    deleted = await hooks.delete(f"/api/webhooks/{created['id']}", headers=ADMIN)
    assert deleted.status_code == 200 and deleted.json()["id"] == created["id"]
    assert (await hooks.get(f"/api/webhooks/{created['id']}", headers=ADMIN)).status_code == 404
    assert hooks_node.webhooks.registry.all() == []


async def test_status_pause_resume_and_deliveries_come_from_the_nodes_reports(
    hooks: httpx.AsyncClient, hooks_node: MemoryNode
) -> None:
    created = (await hooks.post("/api/webhooks", json={"url": URL, "entity_id": "*"}, headers=ADMIN)).json()
    hook_id = created["id"]
    log = hooks_node.webhooks
    failed = Attempt("dl_a", 1_700_000_000_000, 1, 2, 500, "the receiver answered HTTP 500", 3.0)
    retried = Attempt("dl_a", 1_700_000_001_000, 2, 2, None, "ConnectError: refused", 1.0)
    other = Attempt("dl_b", 1_700_000_000_500, 1, 1, 200, None, 2.0)
    await log.write(
        *report_record(hook_id, Report("n1:1", 1, 1_700_000_000_000, "refused", None, [retried, failed]), "n1:1")
    )
    await log.write(*report_record(hook_id, Report("n2:1", 1, None, None, 1_700_000_000_500, [other]), "n2:1"))
    shown = (await hooks.get(f"/api/webhooks/{hook_id}", headers=ADMIN)).json()
    assert shown["status"] == "failing" and shown["lastError"] == "refused"
    assert shown["failingSince"] == "2023-11-14T22:13:20.000Z" and shown["lastSuccess"].endswith("20.500Z")
    deliveries = (await hooks.get(f"/api/webhooks/{hook_id}/deliveries", headers=ADMIN)).json()
    assert deliveries["status"] == "failing"
    assert [(d["delivery"], d["attempt"], d["node"]) for d in deliveries["deliveries"]] == [
        ("dl_a", 2, "n1:1"),
        ("dl_b", 1, "n2:1"),
        ("dl_a", 1, "n1:1"),
    ]
    assert deliveries["deliveries"][1] == {
        "delivery": "dl_b",
        "time": "2023-11-14T22:13:20.500Z",
        "attempt": 1,
        "changes": 1,
        "status": 200,
        "error": None,
        "durationMs": 2.0,
        "node": "n2:1",
    }
    limited = (await hooks.get(f"/api/webhooks/{hook_id}/deliveries?limit=1", headers=ADMIN)).json()
    assert len(limited["deliveries"]) == 1
    assert (await hooks.get(f"/api/webhooks/{hook_id}/deliveries?limit=0", headers=ADMIN)).status_code == 422
    await log.write(*pause_record(hook_id, Pause(1_700_000_002_000, "deliveries failed for more than 3600 s")))
    paused = (await hooks.get(f"/api/webhooks/{hook_id}", headers=ADMIN)).json()
    assert paused["status"] == "paused" and paused["paused"]["reason"].startswith("deliveries failed")
    resumed = await hooks.post(f"/api/webhooks/{hook_id}/resume", headers=ADMIN)
    assert resumed.status_code == 200 and resumed.json()["paused"] is None
    assert (await hooks.post(f"/api/webhooks/{hook_id}/resume", headers=ADMIN)).status_code == 200  # idempotent


async def test_with_auth_off_anybody_manages_webhooks(client: httpx.AsyncClient) -> None:
    response = await client.post("/api/webhooks", json={"url": "https://1.1.1.1/hook", "entity_id": "*"})
    assert response.status_code == 201
    assert len((await client.get("/api/webhooks")).json()) == 1


async def test_the_routes_are_in_the_openapi_document(hooks: httpx.AsyncClient) -> None:
    schema = (await hooks.get("/openapi.json")).json()
    paths = schema["paths"]
    assert set(paths["/api/webhooks"]) == {"get", "post"}
    assert set(paths["/api/webhooks/{webhook_id}"]) == {"get", "delete"}
    assert "post" in paths["/api/webhooks/{webhook_id}/resume"]
    assert "get" in paths["/api/webhooks/{webhook_id}/deliveries"]
    post = paths["/api/webhooks"]["post"]
    assert post["requestBody"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/WebhookIn"}
    assert {"201", "400", "401", "403", "415"} <= set(post["responses"])
    assert "404" in paths["/api/webhooks/{webhook_id}"]["get"]["responses"]
    assert "WebhookIn" in schema["components"]["schemas"] and "WebhookOut" in schema["components"]["schemas"]


async def test_a_deleted_namespaces_webhooks_stop_and_say_so(hooks: httpx.AsyncClient) -> None:
    name, token = await register(hooks)
    body = {"url": URL, "entity_id": f"{name}/*"}
    created = (await hooks.post("/api/webhooks", json=body, headers=bearer(token))).json()
    assert (await hooks.delete(f"/api/namespaces/{name}", headers=ADMIN)).status_code == 200
    await register(hooks, name)  # somebody else holds the name now: their entities must not go to that URL
    shown = (await hooks.get(f"/api/webhooks/{created['id']}", headers=ADMIN)).json()
    assert shown["status"] == "paused" and "was deleted" in shown["paused"]["reason"]
