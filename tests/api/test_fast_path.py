"""The fast path (api/fast_path.py) answers exactly as the FastAPI routes do, and takes only what it may.

A differential test sends the same generated requests (valid and invalid events, wrong types, huge
values, bad JSON, other content types, chunked bodies, keys and query strings, auth off and on with
good, bad and other namespaces' tokens, rate-limited namespaces, request ids) to a node with the
fast path and one without, and compares status, body, headers, what was published and what is read.
The named tests pin down which requests the fast path serves itself and which it hands on.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from api.app import app_node
from api.fast_path import FastPath
from tests.api.helpers import ADMIN, ADMIN_TOKEN, SECURED, bearer, register
from tests.api.helpers import event as an_event
from tests.api.memory import MemoryNode, node_settings

MAX_EVENT_BYTES = 1024
COMPARED_HEADERS = ("content-type", "content-length", "www-authenticate", "retry-after", "allow", "idempotent-replayed")
NAMESPACES = ("alpha", "beta")
WRITTEN_IDS = ("alpha/a1", "alpha/a2", "beta/b1", "plain", "with/slash/es", "ünï")  # explicit eventId and timestamp
GENERATED_IDS = ("alpha/gen", "plain-gen")  # events without eventId or timestamp: never read back
READ_IDS = (*WRITTEN_IDS * 3, "alpha/missing", "nobody", "a%2Fb", " ")  # mostly ids that may have been written

CONFIGS: dict[str, dict[str, Any]] = {
    "open": {},
    "secured": dict(SECURED, rate_limit_per_minute=1),
    "private": dict(SECURED, rate_limit_per_minute=1, public_reads=False),
    "json-logs": {"log_format": "json"},
    "secured-json-logs": dict(SECURED, rate_limit_per_minute=1, log_format="json"),
}


def route_calls(node: MemoryNode) -> list[str]:
    """The paths of the requests the fast path of ``node`` handed on to FastAPI, from now on."""
    fast = node.app.front.app  # type: ignore[attr-defined]  # the request metrics, then the fast path
    assert isinstance(fast, FastPath)
    behind = fast.app
    calls: list[str] = []

    async def counted(scope: Any, receive: Any, send: Any) -> None:
        calls.append(f"{scope['method']} {scope['path']}")
        await behind(scope, receive, send)

    fast.app = counted
    return calls


def frozen_rate_limits(node: MemoryNode) -> None:
    """Make ``node``'s rate limits refill never (the clock stands still): both nodes of a pair
    limit the same requests, whenever they arrive."""
    app_node(node.app).guard._limiter._clock = lambda: 0.0


# -- what the differential test sends --------------------------------------------------------
@dataclass(frozen=True)
class Call:
    """One generated request; ``token`` names a token ("alpha", "admin", ...) each node has its own of."""

    method: str
    path: str
    body: bytes | None = None
    content_type: str | None = None
    token: str | None = None
    key: str | None = None
    request_id: str | None = None
    chunked: bool = False
    given_event_id: bool = True  # False: the answer's eventId is made up by the node (masked)


def _event(entity_id: str, n: int, generated: bool = False, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "stream": "s",
        "source": "fuzz",
        "payload": {"entity_id": entity_id, "properties": {"n": n}},
        **extra,
    }
    if not generated:
        body.setdefault("eventId", f"e-{entity_id}-{n}")
        body.setdefault("timestamp", 1_700_000_000_000 + n)
    return body


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=8,
)


@st.composite
def event_bodies(draw: st.DrawFn) -> tuple[bytes, bool]:
    """A request body and whether the event names its own eventId."""
    n = draw(st.integers(0, 5))
    kind = draw(
        st.sampled_from(["valid", "valid", "generated", "field", "drop", "huge", "many", "not-object", "bad-json"])
    )
    entity_id = draw(st.sampled_from(WRITTEN_IDS))
    body: Any = _event(entity_id, n)
    given_id = True
    if kind == "generated":
        body = _event(draw(st.sampled_from(GENERATED_IDS)), n, generated=True)
        given_id = False
    elif kind == "field":  # a field of any JSON value, wrong types included
        field = draw(st.sampled_from(["stream", "source", "timestamp", "eventId", "op", "payload", "key", "schema"]))
        if field in ("timestamp", "eventId"):  # null is "now" or "make one up": an entity never read
            body["payload"]["entity_id"] = draw(st.sampled_from(GENERATED_IDS))
        body[field] = draw(json_values)
        given_id = isinstance(body.get("eventId"), str)
    elif kind == "drop":
        body.pop(draw(st.sampled_from(["stream", "source", "payload"])))
    elif kind == "huge":
        where = draw(st.sampled_from(["value", "key", "entity", "timestamp", "int"]))
        if where == "value":
            body["payload"]["properties"]["big"] = "x" * draw(st.integers(500, 3000))
        elif where == "key":
            body["payload"]["properties"]["k" * draw(st.integers(10, 40))] = 1
        elif where == "entity":
            body["payload"]["entity_id"] = "alpha/" + "e" * draw(st.integers(200, 1100))
        elif where == "timestamp":
            body["timestamp"] = draw(st.sampled_from([2**63, -1, 10**20, 253402300800000]))
        else:
            body["payload"]["properties"]["n"] = draw(st.sampled_from([2**64, -(2**65), 10**30]))
    elif kind == "many":
        body["payload"]["properties"] = {f"p{i}": i for i in range(draw(st.integers(15, 30)))}
    elif kind == "not-object":
        body = draw(st.sampled_from([[], [body], "event", 5, None, True]))
    if kind == "bad-json":
        raw = draw(st.sampled_from([b"", b"  ", b"{", b'{"stream": }', b"\xff\xfe", b"NaN", b'{"a":1}{"b":2}']))
        return raw, True
    return json.dumps(body).encode(), given_id


content_types = st.sampled_from(
    [
        "application/json",
        "application/json",
        "application/json",
        "application/json",
        "application/json; charset=utf-8",
        "APPLICATION/JSON",
        "application/vnd.flux+json",
        "text/plain",
        None,
    ]
)
tokens = st.sampled_from(
    [None, "admin", "admin", "alpha", "alpha", "alpha", "alpha", "beta", "bogus", "Basic Zm9vOmJhcg==", "Bearer "]
)


@st.composite
def calls(draw: st.DrawFn) -> Call:
    """A POST of one event or a GET of one entity: mostly plain and well-formed (what the fast path
    takes, or a 429 once a namespace used its allowance), else in all the shapes above."""
    if draw(st.integers(0, 2)) > 0:
        entity_id = draw(st.sampled_from(WRITTEN_IDS))
        namespace = entity_id.split("/")[0]
        token = draw(st.sampled_from(["admin", namespace if namespace in NAMESPACES else "admin"]))
        if draw(st.booleans()):
            return Call("GET", f"/api/state/entities/{entity_id}", token=token)
        body = json.dumps(_event(entity_id, draw(st.integers(0, 5)))).encode()
        return Call("POST", "/api/events", body, "application/json", token)
    token = draw(tokens)
    request_id = draw(st.sampled_from([None, None, "trace-7", "x" * 200]))
    if draw(st.integers(0, 2)) == 0:
        query = draw(st.sampled_from(["", "", "", "", "?at=1700000000003", "?at=yesterday", "?x=1"]))
        return Call("GET", "/api/state/entities/" + draw(st.sampled_from(READ_IDS)) + query, None, None, token)
    body, given_id = draw(event_bodies())
    query = draw(st.sampled_from(["", "", "", "", "", "", "?wait=true", "?wait_timeout_ms=0", "?x=1"]))
    key = draw(st.sampled_from([None, None, None, None, None, "k1", "k1", ""]))
    return Call(
        "POST",
        "/api/events" + query,
        body,
        draw(content_types),
        token,
        key,
        request_id,
        draw(st.booleans()),
        given_id,
    )


# -- a pair of nodes, one with the fast path ---------------------------------------------------
class Side:
    """One node of a pair, its client and its tokens by name."""

    def __init__(self, config: dict[str, Any], fast_path: bool) -> None:
        self.node = MemoryNode(node_settings(max_event_bytes=MAX_EVENT_BYTES, **config), fast_path=fast_path)
        frozen_rate_limits(self.node)
        self.tokens: dict[str, str] = {"admin": ADMIN_TOKEN, "bogus": "no-such-token"}

    async def prepare(self, client: httpx.AsyncClient) -> None:
        if self.node.settings.auth_enabled:
            for name in NAMESPACES:
                self.tokens[name] = (await register(client, name))[1]

    async def send(self, client: httpx.AsyncClient, call: Call) -> httpx.Response:
        headers: dict[str, str] = {}
        if call.content_type is not None:
            headers["Content-Type"] = call.content_type
        if call.token is not None:
            token = self.tokens.get(call.token)
            headers["Authorization"] = call.token if token is None else f"Bearer {token}"
        if call.key is not None:
            headers["X-Idempotency-Key"] = call.key
        if call.request_id is not None:
            headers["X-Request-ID"] = call.request_id
        content: Any = call.body
        if call.chunked and call.body is not None:
            content = _chunks(call.body)
        return await client.request(call.method, call.path, content=content, headers=headers)


async def _chunks(body: bytes) -> AsyncIterator[bytes]:
    for start in range(0, len(body), 100):
        yield body[start : start + 100]


def _answer(call: Call, response: httpx.Response) -> dict[str, Any]:
    """What must be equal between the two nodes' answers to ``call``."""
    try:
        body = response.json()
    except ValueError:
        body = response.content
    if isinstance(body, dict) and not call.given_event_id and isinstance(body.get("eventId"), str):
        body["eventId"] = "<made up>"
    headers = {name: response.headers.get(name) for name in COMPARED_HEADERS}
    if not call.given_event_id:
        headers["content-length"] = None  # made-up eventIds may differ in length
    request_id = response.headers.get("x-request-id")
    if request_id is not None and request_id != call.request_id:
        assert len(request_id) == 32, request_id  # made up: a uuid4 hex
        request_id = "<made up>"
    return {"status": response.status_code, "body": body, "headers": headers, "x-request-id": request_id}


def _published(node: MemoryNode) -> list[Any]:
    masked = []
    for envelope in node.publisher.published:
        if envelope["payload"]["entity_id"] in GENERATED_IDS:
            envelope = {**envelope, "eventId": "<made up>", "timestamp": "<now>"}
        masked.append(envelope)
    return masked


@pytest.mark.parametrize("config", sorted(CONFIGS))
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sequence=st.lists(calls(), min_size=1, max_size=12))
async def test_the_fast_path_answers_every_request_as_the_routes_do(config: str, sequence: list[Call]) -> None:
    fast, routes = Side(CONFIGS[config], fast_path=True), Side(CONFIGS[config], fast_path=False)
    async with fast.node.client() as fast_client, routes.node.client() as routes_client:
        await fast.prepare(fast_client)
        await routes.prepare(routes_client)
        handed_on = route_calls(fast.node)
        for call in sequence:
            before = len(handed_on)
            got = _answer(call, await fast.send(fast_client, call))
            expected = _answer(call, await routes.send(routes_client, call))
            assert got == expected, call
            event(f"{call.method} {got['status']} {'by the route' if len(handed_on) > before else 'fast'}")
    assert _published(fast.node) == _published(routes.node)
    assert fast.node.metrics.events_published == routes.node.metrics.events_published


# -- which requests the fast path serves --------------------------------------------------------
async def test_a_valid_single_event_takes_the_fast_path_and_is_published_once(
    node: MemoryNode, client: httpx.AsyncClient
) -> None:
    handed_on = route_calls(node)
    response = await client.post("/api/events", json=an_event("fast-1", 1_700_000_000_000, "ev-1", temp=21))
    assert response.status_code == 200
    assert response.json() == {"eventId": "ev-1", "stream": "test"}
    assert response.headers["content-type"] == "application/json"
    assert [e["eventId"] for e in node.publisher.published] == ["ev-1"]
    assert node.metrics.events_published == 1
    assert handed_on == []


async def test_a_read_of_a_served_entity_takes_the_fast_path(node: MemoryNode, client: httpx.AsyncClient) -> None:
    await client.post("/api/events", json=an_event("with/slash", 1_700_000_000_000, temp=21))
    handed_on = route_calls(node)
    response = await client.get("/api/state/entities/with/slash")
    assert response.status_code == 200
    assert response.json() == {
        "id": "with/slash",
        "properties": {"temp": 21},
        "lastUpdated": "2023-11-14T22:13:20.000Z",
    }
    assert handed_on == []


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"stream": "s", "payload": {"entity_id": "x", "properties": {}}}, 400),
        ({"stream": 5, "source": "a", "payload": {"entity_id": "x", "properties": {}}}, 400),
        ([], 400),
    ],
)
async def test_an_invalid_events_error_comes_from_the_route(
    node: MemoryNode, client: httpx.AsyncClient, body: Any, status: int
) -> None:
    handed_on = route_calls(node)
    response = await client.post("/api/events", json=body)
    assert response.status_code == status and "error" in response.json()
    assert handed_on == ["POST /api/events"]
    assert node.publisher.published == []


async def test_malformed_json_and_other_content_types_go_through_the_route(
    node: MemoryNode, client: httpx.AsyncClient
) -> None:
    handed_on = route_calls(node)
    malformed = await client.post("/api/events", content=b"{", headers={"Content-Type": "application/json"})
    plain = await client.post("/api/events", content=json.dumps(an_event("x")), headers={"Content-Type": "text/plain"})
    assert malformed.status_code == 400 and plain.status_code == 415
    assert handed_on == ["POST /api/events"] * 2


async def test_a_body_over_the_limit_is_refused_by_the_route_read_whole_or_chunked() -> None:
    node = MemoryNode(node_settings(max_event_bytes=MAX_EVENT_BYTES))
    handed_on = route_calls(node)
    big = json.dumps(an_event("x", big="x" * 2000)).encode()
    async with node.client() as client:
        whole = await client.post("/api/events", content=big, headers={"Content-Type": "application/json"})
        chunked = await client.post("/api/events", content=_chunks(big), headers={"Content-Type": "application/json"})
    assert whole.status_code == chunked.status_code == 413
    assert handed_on == ["POST /api/events"] * 2
    assert node.publisher.published == []


async def test_a_chunked_body_within_the_limit_takes_the_fast_path(node: MemoryNode, client: httpx.AsyncClient) -> None:
    handed_on = route_calls(node)
    body = json.dumps(an_event("chunked", 1_700_000_000_000, "ev-c", note="y" * 300)).encode()
    response = await client.post("/api/events", content=_chunks(body), headers={"Content-Type": "application/json"})
    assert response.json() == {"eventId": "ev-c", "stream": "test"}
    assert handed_on == [] and len(node.publisher.published) == 1


async def test_a_keyed_idempotent_request_goes_through_the_route(node: MemoryNode, client: httpx.AsyncClient) -> None:
    handed_on = route_calls(node)
    headers = {"X-Idempotency-Key": "once"}
    first = await client.post("/api/events", json=an_event("keyed", temp=1), headers=headers)
    again = await client.post("/api/events", json=an_event("keyed", temp=1), headers=headers)
    assert first.status_code == again.status_code == 200
    assert again.headers["idempotent-replayed"] == "true" and again.json() == first.json()
    assert handed_on == ["POST /api/events"] * 2
    assert len(node.publisher.published) == 1


async def test_a_request_with_a_query_string_goes_through_the_route(
    node: MemoryNode, client: httpx.AsyncClient
) -> None:
    handed_on = route_calls(node)
    waited = await client.post("/api/events", params={"wait": "true"}, json=an_event("waited", temp=1))
    then = await client.get("/api/state/entities/waited", params={"at": "2000-01-01T00:00:00Z"})
    assert waited.status_code == 200 and then.status_code == 404
    assert handed_on == ["POST /api/events", "GET /api/state/entities/waited"]


async def test_refused_tokens_get_the_routes_answers(secured_node: MemoryNode, secured: httpx.AsyncClient) -> None:
    name, token = await register(secured)
    handed_on = route_calls(secured_node)
    anonymous = await secured.post("/api/events", json=an_event(f"{name}/x"))
    bogus = await secured.post("/api/events", json=an_event(f"{name}/x"), headers=bearer("bogus"))
    other = await secured.post("/api/events", json=an_event("other/x"), headers=bearer(token))
    assert (anonymous.status_code, bogus.status_code, other.status_code) == (401, 401, 403)
    assert anonymous.headers["www-authenticate"] == 'Bearer realm="flux"'
    assert handed_on == ["POST /api/events"] * 3
    own = await secured.post("/api/events", json=an_event(f"{name}/x"), headers=bearer(token))
    admin = await secured.post("/api/events", json=an_event("other/x"), headers=ADMIN)
    assert own.status_code == admin.status_code == 200
    assert len(handed_on) == 3 and len(secured_node.publisher.published) == 2


async def test_a_rate_limited_namespace_gets_the_routes_429_and_is_charged_once_per_event() -> None:
    node = MemoryNode(node_settings(**dict(SECURED, rate_limit_per_minute=2)))
    frozen_rate_limits(node)
    async with node.client() as client:
        name, token = await register(client)
        handed_on = route_calls(node)
        answers = [
            await client.post("/api/events", json=an_event(f"{name}/x"), headers=bearer(token)) for _ in range(3)
        ]
    assert [a.status_code for a in answers] == [200, 200, 429]
    assert answers[2].headers["retry-after"] == "30" and answers[2].json()["retryAfterSeconds"] == 30
    assert handed_on == ["POST /api/events"]
    assert len(node.publisher.published) == 2


async def test_reads_the_fast_path_cannot_serve_go_through_the_route(
    node: MemoryNode, client: httpx.AsyncClient
) -> None:
    await client.post("/api/events", json=an_event("elsewhere", temp=1))
    handed_on = route_calls(node)
    missing = await client.get("/api/state/entities/nobody")
    node.table.served.clear()  # another node serves every partition now
    unserved = await client.get("/api/state/entities/elsewhere")
    assert missing.status_code == 404 and unserved.status_code == 503
    assert handed_on == ["GET /api/state/entities/nobody", "GET /api/state/entities/elsewhere"]


async def test_private_reads_need_a_token_on_the_fast_path_too(
    private_node: MemoryNode, private: httpx.AsyncClient
) -> None:
    name, token = await register(private)
    assert (
        await private.post("/api/events", json=an_event(f"{name}/r", temp=1), headers=bearer(token))
    ).status_code == 200
    handed_on = route_calls(private_node)
    anonymous = await private.get(f"/api/state/entities/{name}/r")
    own = await private.get(f"/api/state/entities/{name}/r", headers=bearer(token))
    assert anonymous.status_code == 401 and own.status_code == 200
    assert handed_on == [f"GET /api/state/entities/{name}/r"]


async def test_a_broker_that_does_not_acknowledge_is_the_routes_503_without_a_second_publish() -> None:
    answers = []
    for fast_path in (True, False):
        node = MemoryNode(node_settings(log_format="json"), fast_path=fast_path)
        node.publisher.fail(1, written=True)  # written, but the acknowledgement was lost
        async with node.client() as client:
            answer = await client.post("/api/events", json=an_event("lost", 1, "ev-l"), headers={"X-Request-ID": "r-1"})
        answers.append((answer.status_code, answer.json(), dict(answer.headers)))
        assert [e["eventId"] for e in node.publisher.published] == ["ev-l"]
        assert node.metrics.events_published == 0
    assert answers[0] == answers[1]
    status, body, headers = answers[0]
    assert status == 503 and "did not acknowledge" in body["error"]
    assert headers["retry-after"] == "1" and headers["x-request-id"] == "r-1"


async def test_an_unexpected_error_in_the_publisher_is_the_routes_500_and_reaches_the_server(
    caplog: pytest.LogCaptureFixture,
) -> None:
    answers = []
    for fast_path in (True, False):
        node = MemoryNode(node_settings(log_format="json"), fast_path=fast_path)
        broken: Callable[..., Any] = _raising(RuntimeError("boom"))
        node.publisher.publish = broken  # type: ignore[method-assign]
        caplog.clear()
        async with node.client() as client:
            with pytest.raises(RuntimeError, match="boom"):
                await client.post("/api/events", json=an_event("x"))
        async with node.client(raise_app_exceptions=False) as client:
            answer = await client.post("/api/events", json=an_event("x"))
        answers.append((answer.status_code, answer.json(), dict(answer.headers)))
        assert "unexpected error on POST /api/events" in caplog.text
    assert answers[0] == answers[1]
    assert answers[0][0] == 500 and answers[0][1] == {"error": "internal error: RuntimeError"}


def _raising(exc: Exception) -> Callable[..., Any]:
    async def publish(*_: Any) -> Any:
        raise exc

    return publish


async def test_with_request_ids_the_fast_path_answers_the_id_and_logs_under_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    node = MemoryNode(node_settings(log_format="json"))
    seen: list[str | None] = []
    publish = node.publisher.publish

    async def noting(envelope: Any) -> Any:
        from flux.logs import REQUEST_ID

        seen.append(REQUEST_ID.get())
        return await publish(envelope)

    node.publisher.publish = noting  # type: ignore[method-assign]
    handed_on = route_calls(node)
    async with node.client() as client:
        kept = await client.post("/api/events", json=an_event("rid"), headers={"X-Request-ID": "trace-9"})
        made = await client.post("/api/events", json=an_event("rid"))
        read = await client.get("/api/state/entities/rid")
    assert kept.headers["x-request-id"] == "trace-9" and seen[0] == "trace-9"
    assert len(made.headers["x-request-id"]) == 32 and seen[1] == made.headers["x-request-id"]
    assert len(read.headers["x-request-id"]) == 32
    assert handed_on == []


async def _routed(app: Any, method: str, path: str) -> str:
    """The name of the route FastAPI (without the fast path) serves ``method path`` with."""
    scope: dict[str, Any] = {
        "type": "http",
        "method": method,
        "path": path,
        "root_path": "",
        "query_string": b"",
        "headers": [],
        "http_version": "1.1",
        "scheme": "http",
        "server": ("flux", 80),
    }

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(_: Any) -> None:
        pass

    await app(scope, receive, send)
    return str(scope["route"].name)


async def test_the_paths_the_fast_path_serves_are_those_of_its_two_routes() -> None:
    app = MemoryNode(fast_path=False).app
    for entity_id in ("x", "a/b", "a/b/history", "a/b/events", "%41", "ns/e/", " ", "a\tb"):
        assert await _routed(app, "GET", f"/api/state/entities/{entity_id}") == "get_entity", entity_id
    assert await _routed(app, "POST", "/api/events") == "publish_event"


async def test_an_event_that_alone_breaks_the_entity_caps_is_refused_by_the_route() -> None:
    node = MemoryNode(node_settings(max_entity_properties=3))
    handed_on = route_calls(node)
    body = an_event("capped", **{f"p{n}": n for n in range(4)})
    async with node.client() as client:
        response = await client.post("/api/events", json=body)
    assert response.status_code == 413 and "FLUX_MAX_ENTITY_PROPERTIES" in response.json()["error"]
    assert handed_on == ["POST /api/events"]
    assert node.publisher.published == []
