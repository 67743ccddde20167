"""WS /api/ws in process (Starlette's TestClient): protocol errors, who may subscribe to what, and limits.

Messages to one connection arrive in the order they were queued, so a ``ping`` answered by
``pong`` proves that nothing else was queued before it. How changes reach subscribers through
the real change feed (order, snapshots joined to the stream, slow clients, several nodes) is in
tests/e2e/test_websocket.py.
"""

from __future__ import annotations

import asyncio
import time
import warnings
from collections.abc import Callable
from typing import Any

import pytest
from pydantic import ValidationError
from starlette.websockets import WebSocketDisconnect

from api.live import hub as hub_module
from api.live.hub import Connection
from api.server import HttpServer
from flux.model.namespaces import encode_record
from tests.api.helpers import ADMIN, bearer, event, new_name
from tests.api.memory import MemoryNode, node_settings

with warnings.catch_warnings():  # Starlette would rather have httpx2, which Flux does not depend on
    warnings.filterwarnings("ignore", "Using `httpx` with `starlette.testclient`", UserWarning)
    from starlette.testclient import TestClient, WebSocketDenialResponse, WebSocketTestSession


def register(http: TestClient) -> tuple[str, str]:
    """Register a namespace as the admin; returns (name, token)."""
    name = new_name()
    response = http.post("/api/namespaces", json={"name": name}, headers=ADMIN)
    assert response.status_code == 201, response.text
    return name, str(response.json()["token"])


def subscribe(ws: WebSocketTestSession, pattern: str, **fields: Any) -> dict[str, Any]:
    """Subscribe and return the acknowledgement."""
    ws.send_json({"type": "subscribe", "entity_id": pattern, **fields})
    return ws.receive_json()  # type: ignore[no-any-return]


def nothing_queued(ws: WebSocketTestSession) -> bool:
    """Whether the next message after a ping is its pong."""
    ws.send_json({"type": "ping"})
    return ws.receive_json() == {"type": "pong"}  # type: ignore[no-any-return]


def publish(http: TestClient, entity_id: str, token: str | None = None, **properties: Any) -> None:
    response = http.post("/api/events", json=event(entity_id, **properties), headers=bearer(token) if token else {})
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    ("message", "error"),
    [
        ("not json", "message is not valid JSON"),
        ("[1]", "message must be a JSON object"),
        ({"type": "dance"}, "unknown message type 'dance'"),
        ({"type": "subscribe"}, "subscribe needs 'entity_id'"),
        ({"type": "subscribe", "entity_id": ""}, "subscribe needs 'entity_id'"),
        ({"type": "subscribe", "entity_id": "x", "format": "xml"}, "format must be 'property' or 'entity'"),
        ({"type": "subscribe", "entity_id": "x", "snapshot": "yes"}, "snapshot must be true or false"),
        ({"type": "unsubscribe", "entity_id": "never"}, "not subscribed to 'never'"),
    ],
)
def test_malformed_and_unknown_messages_get_an_error_and_the_socket_stays_open(
    node: MemoryNode, message: dict[str, Any] | str, error: str
) -> None:
    with TestClient(node.app) as http, http.websocket_connect("/api/ws") as ws:
        if isinstance(message, str):
            ws.send_text(message)
        else:
            ws.send_json(message)
        answer = ws.receive_json()
        assert answer["type"] == "error" and error in answer["error"]
        assert nothing_queued(ws)
        assert subscribe(ws, "u/a")["type"] == "subscribed"
        publish(http, "u/a", still="open")
        update = ws.receive_json()
        assert (update["type"], update["entity_id"], update["property"], update["value"]) == (
            "state_update",
            "u/a",
            "still",
            "open",
        )


def test_subscriptions_are_open_by_default_with_auth_on(secured_node: MemoryNode) -> None:
    with TestClient(secured_node.app) as http, http.websocket_connect("/api/ws") as ws:
        name, token = register(http)
        assert subscribe(ws, f"{name}/*")["type"] == "subscribed"
        assert subscribe(ws, "*")["type"] == "subscribed"
        publish(http, f"{name}/live", token, v=1)
        update = ws.receive_json()
        assert update["type"] == "state_update" and update["entity_id"] == f"{name}/live"
        assert nothing_queued(ws), "two matching subscriptions of one format: one message"


def test_private_websocket_without_a_token_is_closed_with_1008_and_the_reason(private_node: MemoryNode) -> None:
    with TestClient(private_node.app) as http:
        for query in ("", "?token=flux_not-a-real-token"):
            with http.websocket_connect(f"/api/ws{query}") as ws, pytest.raises(WebSocketDisconnect) as closed:
                ws.receive_json()
            assert closed.value.code == 1008
            assert "Bearer" in closed.value.reason or "invalid token" in closed.value.reason


def test_private_websocket_is_scoped_to_the_token_namespace(private_node: MemoryNode) -> None:
    with TestClient(private_node.app) as http:
        mine, token = register(http)
        theirs, their_token = register(http)
        with (
            http.websocket_connect(f"/api/ws?token={token}") as by_query,
            http.websocket_connect("/api/ws", headers=bearer(token)) as by_header,
        ):
            for ws in (by_query, by_header):
                for pattern in ("*", f"{theirs}/*", f"{theirs}/b", mine[:5] + "*"):
                    refusal = subscribe(ws, pattern)
                    assert refusal["type"] == "error" and refusal["entity_id"] == pattern
                    assert "can read ids starting with" in refusal["error"]
                assert subscribe(ws, f"{mine}/*")["type"] == "subscribed"
            publish(http, f"{theirs}/b", their_token, v=1)
            publish(http, f"{mine}/a", token, v=2)
            for ws in (by_query, by_header):
                update = ws.receive_json()
                assert update["entity_id"] == f"{mine}/a"  # theirs never arrives, though it came first


def closed_with(ws: WebSocketTestSession) -> WebSocketDisconnect:
    """How the server closed ``ws``: the next receive raises it (a message first would fail the test)."""
    with pytest.raises(WebSocketDisconnect) as closed:
        ws.receive_json()
    return closed.value


@pytest.mark.parametrize(
    ("change", "reason"),
    [("rotate", "was replaced (a rotation"), ("delete", "was deleted: its token no longer works")],
)
def test_private_websockets_of_a_namespace_whose_token_is_voided_are_closed_with_1008(
    private_node: MemoryNode, change: str, reason: str
) -> None:
    with TestClient(private_node.app) as http:
        doomed, token = register(http)
        other, other_token = register(http)
        with (
            http.websocket_connect(f"/api/ws?token={token}") as by_query,
            http.websocket_connect("/api/ws", headers=bearer(token)) as by_header,
            http.websocket_connect("/api/ws", headers=bearer(other_token)) as bystander,
            http.websocket_connect("/api/ws", headers=ADMIN) as admin,
        ):
            for ws, pattern in ((by_query, doomed), (by_header, doomed), (bystander, other), (admin, doomed)):
                assert subscribe(ws, f"{pattern}/*")["type"] == "subscribed"
            hub = private_node.hub
            tenants = [c for c in hub.connections if c.caller.namespace and c.caller.namespace.name == doomed]
            assert len(tenants) == 2
            if change == "rotate":
                assert http.post(f"/api/namespaces/{doomed}/token", headers=ADMIN).status_code == 200
            else:
                assert http.delete(f"/api/namespaces/{doomed}", headers=ADMIN).status_code == 200
            assert all(c.dropped.done() for c in tenants), "closed as the change is folded"
            for ws in (by_query, by_header):
                closed = closed_with(ws)
                assert closed.code == 1008 and reason in closed.reason and doomed in closed.reason
            assert nothing_queued(bystander) and nothing_queued(admin), "other namespaces and the admin stay"
            assert len(private_node.hub.connections) == 2
        assert private_node.metrics.websocket_dropped == 0, "not counted as too slow"


def test_a_namespace_change_that_keeps_the_token_keeps_the_connection(private_node: MemoryNode) -> None:
    with TestClient(private_node.app) as http:
        name, token = register(http)
        with http.websocket_connect("/api/ws", headers=bearer(token)) as ws:
            holder = private_node.namespaces.registry.holder(name)
            assert holder is not None
            private_node.namespaces.apply(*encode_record(holder))  # restated, as a process that lost a race does
            assert [c.dropped.done() for c in private_node.hub.connections] == [False]
            assert nothing_queued(ws)


def test_a_connection_has_at_most_the_configured_number_of_subscriptions() -> None:
    node = MemoryNode(node_settings(ws_max_subscriptions=2))
    with TestClient(node.app) as http, http.websocket_connect("/api/ws") as ws:
        assert subscribe(ws, "a")["type"] == "subscribed"
        assert subscribe(ws, "b*")["type"] == "subscribed"
        refused = subscribe(ws, "c")
        assert refused == {"type": "error", "error": "at most 2 subscriptions per connection"}
        assert subscribe(ws, "a", format="entity")["type"] == "subscribed", "a subscription may be replaced"


@pytest.mark.parametrize("pattern", ["seen/a", "seen/*"])
def test_a_change_the_node_showed_before_a_subscribe_is_not_sent_to_it_as_news(
    node: MemoryNode, monkeypatch: pytest.MonkeyPatch, pattern: str
) -> None:
    """Another HTTP process answered the write (or read it) before this process's relay delivered it."""
    with TestClient(node.app) as http, http.websocket_connect("/api/ws") as ws:
        late: list[Any] = []
        with monkeypatch.context() as patch:
            patch.setattr(node.hub, "on_record", late.append)
            publish(http, "seen/a", v=1)  # folded, shown elsewhere; this relay has not got there
        assert subscribe(ws, pattern)["type"] == "subscribed"
        assert http.portal is not None
        http.portal.call(node.hub.on_record, late[0])  # the relay gets there after the subscribe
        publish(http, "seen/a", v=2)
        assert ws.receive_json()["value"] == 2
        assert nothing_queued(ws)


def test_a_snapshot_over_the_configured_size_is_refused_and_one_within_it_is_sent() -> None:
    node = MemoryNode(node_settings(ws_snapshot_limit=2))
    with TestClient(node.app) as http, http.websocket_connect("/api/ws") as ws:
        for entity_id in ("big/1", "big/2", "big/3", "small/1", "small/2"):
            publish(http, entity_id, n=1)
        refused = subscribe(ws, "big/*", snapshot=True)
        assert refused["type"] == "error" and "FLUX_WS_SNAPSHOT_LIMIT" in refused["error"]
        assert subscribe(ws, "small/*", snapshot=True) == {
            "type": "subscribed",
            "entity_id": "small/*",
            "format": "property",
            "snapshot": True,
        }
        snapshot = [ws.receive_json() for _ in range(2)]
        assert [(m["type"], m["entity"]["id"]) for m in snapshot] == [("snapshot", "small/1"), ("snapshot", "small/2")]
        assert ws.receive_json() == {"type": "snapshot_complete", "entity_id": "small/*", "count": 2}


OTHER_SITE = "https://evil.example"


@pytest.mark.parametrize(
    ("allowed", "origin"),
    [
        ("", None),  # a program, not a browser page
        ("", "http://testserver"),  # Flux's own pages (TestClient's requests go to testserver:80)
        ("", "HTTP://TestServer:80"),
        ("https://app.example.com", "https://APP.example.com:443"),
        ("https://app.example.com, http://localhost:8080", "http://localhost:8080"),
        ("*", OTHER_SITE),
        ("*", "null"),
    ],
)
def test_programs_flux_own_pages_and_listed_origins_may_open_a_websocket(allowed: str, origin: str | None) -> None:
    node = MemoryNode(node_settings(ws_allowed_origins=allowed))
    headers = {} if origin is None else {"origin": origin}
    with TestClient(node.app) as http, http.websocket_connect("/api/ws", headers=headers) as ws:
        assert subscribe(ws, "o/a")["type"] == "subscribed"


@pytest.mark.parametrize(
    ("allowed", "origin"),
    [
        ("", OTHER_SITE),
        ("", "http://testserver:8080"),  # another port is another origin
        ("", "https://testserver.evil.example"),
        ("", "null"),  # sandboxed frames, file:// pages
        ("", "not an origin"),
        ("https://app.example.com", "http://app.example.com"),  # another scheme
        ("https://app.example.com", OTHER_SITE),
    ],
)
def test_browser_pages_of_other_origins_are_refused_with_403_before_the_handshake(allowed: str, origin: str) -> None:
    node = MemoryNode(node_settings(ws_allowed_origins=allowed))
    with (
        TestClient(node.app) as http,
        pytest.raises(WebSocketDenialResponse) as refused,
        http.websocket_connect("/api/ws", headers={"origin": origin}),
    ):
        pass
    assert refused.value.status_code == 403
    assert "FLUX_WS_ALLOWED_ORIGINS" in refused.value.json()["error"]
    assert origin in refused.value.json()["error"]
    assert node.hub.connections == set() and node.metrics.websocket_connections == 0


@pytest.mark.parametrize("entry", ["https://app.example.com/path", "app.example.com", "ftp://x.example", "https://"])
def test_an_allowed_origin_that_is_not_an_origin_is_refused_at_start(entry: str) -> None:
    with pytest.raises(ValidationError, match="FLUX_WS_ALLOWED_ORIGINS"):
        node_settings(ws_allowed_origins=f"https://ok.example,{entry}")


# -- memory bounds: a client that does not read --------------------------------------------------


async def never_sends(self: Connection) -> None:
    """A sender whose client reads nothing: every message stays queued."""
    await asyncio.Event().wait()


def until(condition: Callable[[], Any], seconds: float = 5.0) -> Any:
    """Wait for ``condition`` (evaluated in this thread while the app runs in TestClient's); fail after ``seconds``."""
    deadline = time.monotonic() + seconds
    while not (result := condition()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)
    return result


def the_connection(node: MemoryNode) -> Connection:
    """The node's only connection, once it joined."""
    (connection,) = until(lambda: list(node.hub.connections))
    return connection


def test_a_client_that_does_not_read_is_dropped_past_the_byte_bound_and_its_queue_released(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(Connection, "send_loop", never_sends)
    node = MemoryNode(node_settings(ws_queue_max_bytes=65_536))
    with TestClient(node.app) as http, http.websocket_connect("/api/ws") as ws:
        connection = the_connection(node)
        ws.send_json({"type": "subscribe", "entity_id": "big/*"})
        until(lambda: connection.subscriptions)
        for i in range(20):  # ~10 KB a message: far fewer messages than FLUX_WS_QUEUE_LIMIT
            publish(http, f"big/{i}", pad="x" * 10_000)
        until(lambda: connection.dropped.done())
        assert connection.queue.qsize() == 0 and connection.queued_bytes == 0, "released at the drop"
        closed = closed_with(ws)
        assert closed.code == 1008
        assert closed.reason.startswith("too slow: more than 65536 bytes of messages waiting")
        assert node.hub.connections == set() and node.metrics.websocket_dropped == 1


def test_repeated_snapshot_subscribes_never_queue_past_the_byte_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Connection, "send_loop", never_sends)
    monkeypatch.setattr(hub_module, "SNAPSHOT_WAIT_S", 0.2)
    queued_after_snapshot: list[int] = []
    send = Connection.send

    def measured(self: Connection, text: str) -> None:
        send(self, text)
        if text.startswith('{"type":"snapshot",'):
            queued_after_snapshot.append(self.queued_bytes)

    monkeypatch.setattr(Connection, "send", measured)
    node = MemoryNode(node_settings(ws_queue_max_bytes=65_536, ws_subscribe_per_second=1_000))
    with TestClient(node.app) as http:
        publish(http, "large", pad="x" * 20_000)
        with http.websocket_connect("/api/ws") as ws:
            connection = the_connection(node)
            for _ in range(20):  # the attack, scaled down: 400 KB of snapshots asked for
                ws.send_json({"type": "subscribe", "entity_id": "large", "snapshot": True})
            until(lambda: connection.dropped.done())
            closed = closed_with(ws)
        assert closed.code == 1008 and closed.reason.startswith("too slow: read nothing of a full queue")
        assert len(queued_after_snapshot) == 3, "three 20 KB snapshots fit in 64 KiB, the fourth waited"
        assert max(queued_after_snapshot) <= 65_536
        assert connection.queued_bytes == 0 and node.hub.connections == set()


def test_subscribes_beyond_the_rate_get_an_error_and_unsubscribes_do_not_count() -> None:
    node = MemoryNode(node_settings(ws_subscribe_per_second=0.2))  # one at once, then one every 5 s
    with TestClient(node.app) as http, http.websocket_connect("/api/ws") as ws:
        assert subscribe(ws, "r/1")["type"] == "subscribed"
        for pattern in ("r/2", "r/1"):
            refused = subscribe(ws, pattern)
            assert refused["type"] == "error" and refused["entity_id"] == pattern
            assert "FLUX_WS_SUBSCRIBE_PER_SECOND" in refused["error"]
        ws.send_json({"type": "unsubscribe", "entity_id": "r/1"})
        assert ws.receive_json() == {"type": "unsubscribed", "entity_id": "r/1"}
        assert nothing_queued(ws)


def test_a_token_bucket_allows_its_rate_and_a_second_of_burst() -> None:
    from api.live.websocket import TokenBucket  # here, so the other tests run without it

    now = [0.0]
    bucket = TokenBucket(2.0, clock=lambda: now[0])
    assert [bucket.take() for _ in range(3)] == [True, True, False]
    now[0] += 0.5
    assert [bucket.take() for _ in range(2)] == [True, False]
    now[0] += 60
    assert [bucket.take() for _ in range(3)] == [True, True, False], "the burst does not grow while idle"
    slow = TokenBucket(0.5, clock=lambda: now[0])
    assert [slow.take(), slow.take()] == [True, False]


def test_a_client_that_keeps_sending_without_reading_is_dropped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Connection, "send_loop", never_sends)
    node = MemoryNode(node_settings(ws_queue_max_bytes=4_096, ws_subscribe_per_second=0.2))
    with TestClient(node.app) as http, http.websocket_connect("/api/ws") as ws:
        connection = the_connection(node)
        for i in range(100):  # one subscribed, then refusals: every answer counts in the bound
            ws.send_json({"type": "subscribe", "entity_id": f"flood/{i}"})
        until(lambda: connection.dropped.done())
        assert connection.queued_bytes == 0
        closed = closed_with(ws)
        assert closed.code == 1008 and closed.reason.startswith("too slow: more than 4096 bytes")


def test_patterns_longer_than_an_entity_id_are_refused(node: MemoryNode) -> None:
    longest = node.settings.max_entity_id_length
    with TestClient(node.app) as http, http.websocket_connect("/api/ws") as ws:
        for pattern in ("a" * (longest + 1), "a" * (longest + 1) + "*"):
            refused = subscribe(ws, pattern)
            assert refused["type"] == "error" and "FLUX_MAX_ENTITY_ID_LENGTH" in refused["error"]
            assert pattern not in refused["error"], "not echoed"
            ws.send_json({"type": "unsubscribe", "entity_id": pattern})
            assert "FLUX_MAX_ENTITY_ID_LENGTH" in ws.receive_json()["error"]
        for pattern in ("a" * longest, "a" * longest + "*"):
            assert subscribe(ws, pattern)["type"] == "subscribed"
        assert node.hub.connections and all(len(c.subscriptions) == 2 for c in node.hub.connections)
        publish(http, "a" * longest, v=1)
        assert ws.receive_json()["type"] == "state_update"


def test_a_client_message_over_the_size_limit_closes_the_connection_with_1009() -> None:
    settings = node_settings(ws_max_message_bytes=1_024)
    node = MemoryNode(settings)
    with TestClient(node.app) as http, http.websocket_connect("/api/ws") as ws:
        ws.send_text('{"type": "ping", "pad": "' + "x" * 900 + '"}')
        assert ws.receive_json() == {"type": "pong"}
        ws.send_text('{"type": "ping", "pad": "' + "é" * 510 + '"}')  # 1,047 bytes, 537 characters
        closed = closed_with(ws)
        assert closed.code == 1009
        assert closed.reason == "message of 1047 bytes is larger than FLUX_WS_MAX_MESSAGE_BYTES (1024)"
        assert node.hub.connections == set()
    assert HttpServer(settings, node.app)._server.config.ws_max_size == 1_024, "uvicorn refuses it first"
