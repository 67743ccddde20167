"""Calls between nodes (api/cluster/node_calls.py): with FLUX_CLUSTER_SECRET the admin token never leaves its node.

The other node is an in-memory node reached through an ASGI transport that records every request,
so what a forwarded read or a gathered share really carries is seen where it arrives.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import httpx
import orjson
import pytest
from pydantic import ValidationError
from starlette.requests import Request

from api.cluster.forward import Forwarder
from api.cluster.gather import Cluster
from api.cluster.node_calls import CALLER_HEADER, MAX_CALL_ITEMS, SECRET_HEADER, NodeCalls
from tests.api.helpers import ADMIN, ADMIN_TOKEN, SECURED, assert_refused, bearer, event, register
from tests.api.memory import BASE_URL, MemoryNode, node_settings

SECRET = "cluster-secret-" + "s" * 32
THIS_NODE = "http://this-node:3000"


class Recording(httpx.AsyncBaseTransport):
    """Delivers requests to an app in process and keeps each one."""

    def __init__(self, node: MemoryNode) -> None:
        self._inner = httpx.ASGITransport(app=node.app)
        self.seen: list[httpx.Request] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(request)
        return await self._inner.handle_async_request(request)


class AllElsewhere:
    """This node's view of the group: the other node (the in-memory one) serves every partition."""

    def active_partitions(self) -> list[int]:
        return []

    def recovered(self) -> bool:
        return True

    def owners(self) -> dict[str, Sequence[int]]:
        return {BASE_URL: [0, 1, 2, 3]}


def other_node(secret: str | None = SECRET) -> MemoryNode:
    """The node called: auth on, private reads, the app's secret (or none)."""
    return MemoryNode(node_settings(**SECURED, public_reads=False, cluster_secret=secret))


def this_node(other: MemoryNode, secret: str | None = SECRET) -> tuple[NodeCalls, Recording]:
    recording = Recording(other)
    return NodeCalls(THIS_NODE, 5.0, secret, ADMIN_TOKEN, transport=recording), recording


async def tenant_with_entities(node: MemoryNode) -> tuple[str, str]:
    async with node.client() as client:
        name, token = await register(client)
        batch = [event(f"{name}/e{i}", i=i) for i in range(3)]
        assert (await client.post("/api/events/batch", json=batch, headers=bearer(token))).status_code == 200
    return name, token


def forwarded_request(path: str, auth: str) -> Request:
    headers = [(b"authorization", auth.encode()), (b"accept", b"application/json")]
    return Request({"type": "http", "method": "GET", "path": path, "query_string": b"", "headers": headers})


async def test_with_the_secret_a_gathered_share_for_the_admin_carries_no_admin_token() -> None:
    other = other_node()
    name, token = await tenant_with_entities(other)
    calls, recording = this_node(other)
    cluster = Cluster(AllElsewhere(), None, calls, 4, 0.0)  # type: ignore[arg-type]
    wanted = [f"{name}/e{i}" for i in range(3)]
    assert sorted(await cluster.lookup(wanted, f"Bearer {ADMIN_TOKEN}")) == wanted
    assert await cluster.count_namespaces([name], f"Bearer {ADMIN_TOKEN}") == {name: 3}
    assert sorted(await cluster.lookup(wanted, f"Bearer {token}")) == wanted  # a tenant travels with its token
    admin_calls, tenant_call = recording.seen[:2], recording.seen[2]
    for sent in admin_calls:
        assert "authorization" not in sent.headers and ADMIN_TOKEN not in str(sent.headers.raw)
        assert sent.headers[CALLER_HEADER] == "admin" and sent.headers[SECRET_HEADER] == SECRET
    assert tenant_call.headers["authorization"] == f"Bearer {token}" and CALLER_HEADER not in tenant_call.headers
    await calls.close()


async def test_with_the_secret_a_forwarded_read_for_the_admin_carries_no_admin_token() -> None:
    other = other_node()
    name, _ = await tenant_with_entities(other)
    calls, recording = this_node(other)
    answer = await Forwarder(calls).forward(
        forwarded_request(f"/api/state/entities/{name}/e1", f"Bearer {ADMIN_TOKEN}"), BASE_URL
    )
    assert answer.status_code == 200 and answer.headers["x-flux-served-by"] == BASE_URL
    (sent,) = recording.seen
    assert "authorization" not in sent.headers and sent.headers[CALLER_HEADER] == "admin"
    assert sent.headers["x-flux-forwarded-by"] == THIS_NODE and sent.headers["accept"] == "application/json"
    await calls.close()


async def test_without_the_secret_callers_travel_with_their_authorization_as_today() -> None:
    other = other_node(secret=None)
    name, _ = await tenant_with_entities(other)
    calls, recording = this_node(other, secret=None)
    cluster = Cluster(AllElsewhere(), None, calls, 4, 0.0)  # type: ignore[arg-type]
    assert len(await cluster.lookup([f"{name}/e0"], f"Bearer {ADMIN_TOKEN}")) == 1
    (sent,) = recording.seen
    assert sent.headers["authorization"] == f"Bearer {ADMIN_TOKEN}"
    assert SECRET_HEADER not in sent.headers and CALLER_HEADER not in sent.headers
    await calls.close()


async def test_with_the_secret_the_internal_endpoints_answer_only_calls_that_show_it() -> None:
    other = other_node()
    name, _ = await tenant_with_entities(other)
    path, params = "/api/internal/entities", {"partitions": "0,1,2,3", "prefix": f"{name}/"}
    async with other.client() as client:
        assert_refused(await client.get(path, params=params, headers=ADMIN), 403, "other nodes of this app only")
        wrong = {**ADMIN, SECRET_HEADER: "x" * 40}
        assert_refused(await client.get(path, params=params, headers=wrong), 403, "does not match FLUX_CLUSTER_SECRET")
        shown = await client.get(path, params=params, headers={SECRET_HEADER: SECRET, CALLER_HEADER: "admin"})
        assert shown.status_code == 200 and len(shown.json()["items"]) == 3
        anonymous = await client.get(path, params=params, headers={SECRET_HEADER: SECRET})
        assert anonymous.status_code == 401, "a node call still needs a caller"


async def test_the_admin_claim_counts_only_with_the_secret_and_only_for_reads() -> None:
    other = other_node()
    name, _ = await tenant_with_entities(other)
    claim = {CALLER_HEADER: "admin"}
    async with other.client() as client:
        read = f"/api/state/entities/{name}/e0"
        assert (await client.get(read, headers=claim)).status_code == 401  # no secret: not a node call
        assert (await client.get(read, headers={**claim, SECRET_HEADER: SECRET})).status_code == 200
        write = await client.post("/api/events", json=event(f"{name}/x", v=1), headers={**claim, SECRET_HEADER: SECRET})
        assert write.status_code == 401, "the secret never stands in for the admin token on a write"
        admin = await client.post(f"/api/namespaces/{name}/token", headers={**claim, SECRET_HEADER: SECRET})
        assert admin.status_code == 401


def test_a_warning_names_the_other_nodes_once_when_tokens_travel_unprotected(caplog: pytest.LogCaptureFixture) -> None:
    owners = {THIS_NODE: [0, 1], "http://other:3001": [2, 3]}
    with caplog.at_level(logging.WARNING, logger="api.cluster.node_calls"):
        NodeCalls(THIS_NODE, 1.0, SECRET).warn_if_unprotected(True, owners)
        NodeCalls(THIS_NODE, 1.0).warn_if_unprotected(False, owners)  # auth off: no token to protect
        NodeCalls(THIS_NODE, 1.0).warn_if_unprotected(True, {THIS_NODE: [0, 1, 2, 3]})  # alone
        assert caplog.records == []
        unprotected = NodeCalls(THIS_NODE, 1.0)
        unprotected.warn_if_unprotected(True, owners)
        unprotected.warn_if_unprotected(True, owners)
    (warning,) = caplog.records
    assert "FLUX_CLUSTER_SECRET is unset" in warning.getMessage() and "http://other:3001" in warning.getMessage()


def test_a_cluster_secret_shorter_than_32_characters_refuses_the_start() -> None:
    with pytest.raises(ValidationError, match="FLUX_CLUSTER_SECRET needs at least 32 characters"):
        node_settings(cluster_secret="short")
    assert node_settings(cluster_secret=SECRET).cluster_secret is not None


async def test_a_gathered_lookup_or_count_longer_than_one_call_carries_goes_in_several_calls() -> None:
    other = MemoryNode(node_settings())
    async with other.client() as client:
        batch = [event(f"big/e{i}", v=i) for i in range(3)]
        assert (await client.post("/api/events/batch", json=batch)).status_code == 200
    calls, recording = this_node(other, secret=None)
    cluster = Cluster(AllElsewhere(), None, calls, 4, 0.0)  # type: ignore[arg-type]
    wanted = [f"big/e{i}" for i in range(3)] + [f"big/absent-{i}" for i in range(2 * MAX_CALL_ITEMS + 1)]
    assert sorted(await cluster.lookup(wanted, None)) == ["big/e0", "big/e1", "big/e2"]
    names = ["big"] + [f"none{i}" for i in range(MAX_CALL_ITEMS)]
    counts = await cluster.count_namespaces(names, None)
    assert counts["big"] == 3 and sum(counts.values()) == 3 and len(counts) == MAX_CALL_ITEMS + 1
    sizes = [len(next(iter(orjson.loads(sent.content).values()))) for sent in recording.seen]
    assert sizes == [MAX_CALL_ITEMS, MAX_CALL_ITEMS, 4, MAX_CALL_ITEMS, 1]
    await calls.close()


async def test_a_gathered_list_at_a_time_ends_where_the_budget_of_this_node_ran_out_and_goes_on_from_there() -> None:
    other = MemoryNode(node_settings())
    at = 1_700_000_000_009
    async with other.client() as client:
        batch = [event(f"t/{n}", at - 9 + i) for n in range(6) for i in range(3)]
        assert (await client.post("/api/events/batch", json=batch)).status_code == 200
    calls, recording = this_node(other, secret=None)
    cluster = Cluster(AllElsewhere(), None, calls, 4, 0.0, at_budget=7)  # type: ignore[arg-type]
    first = await cluster.page("t/", 0, 100, None, at)
    assert [e["id"] for e in first.entities] == ["t/0", "t/1", "t/2"] and first.after == "t/2"
    rest = await cluster.page("t/", 0, 100, None, at, first.after)
    assert [e["id"] for e in rest.entities] == ["t/3", "t/4", "t/5"] and rest.after is None
    assert [sent.url.params["budget"] for sent in recording.seen] == ["7", "7"]
    await calls.close()
