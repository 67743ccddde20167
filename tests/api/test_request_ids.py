"""Request ids: with JSON logs or the access log on, every answer carries X-Request-ID (the client's own
if it sent a usable one); otherwise nothing is added to the request path."""

from __future__ import annotations

from tests.api.memory import MemoryNode, node_settings


async def test_with_json_logs_every_answer_carries_a_request_id_keeping_the_clients() -> None:
    node = MemoryNode(node_settings(log_format="json"))
    async with node.client() as client:
        made = await client.get("/api/state/entities/nobody")
        kept = await client.get("/health", headers={"X-Request-ID": "trace-42"})
        unusable = await client.get("/health", headers={"X-Request-ID": "x" * 500})
    assert made.status_code == 404 and len(made.headers["x-request-id"]) == 32
    assert kept.headers["x-request-id"] == "trace-42"
    assert unusable.headers["x-request-id"] != "x" * 500


async def test_the_access_log_alone_turns_request_ids_on() -> None:
    async with MemoryNode(node_settings(access_log=True)).client() as client:
        assert "x-request-id" in (await client.get("/health")).headers


async def test_with_quiet_text_logs_no_request_id_is_added() -> None:
    async with MemoryNode(node_settings()).client() as client:
        assert "x-request-id" not in (await client.get("/health")).headers
