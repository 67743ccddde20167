"""The client's subscriptions (AsyncFluxClient.subscribe) against an in-memory node served by uvicorn in
this process: typed messages in both formats, snapshots, reconnecting and re-syncing when the server
goes away and comes back, errors, and closing.

The node's state outlives its server, so a test can stop the server, change entities through the
app directly, and start the server again: what the subscription missed must come back as the resync
snapshot. The same against a real node and broker is tests/e2e/test_client.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest
import uvicorn

from flux.client import (
    AsyncFluxClient,
    Change,
    Entity,
    EntityDeleted,
    EntityUpdate,
    Reconnected,
    RetryPolicy,
    Snapshot,
    SnapshotComplete,
    StateUpdate,
    Subscription,
    SubscriptionError,
    Unauthorized,
    Unavailable,
    event,
)
from tests.api.helpers import SECURED
from tests.api.memory import MemoryNode, node_settings
from tests.flux_process import free_port

QUICK = RetryPolicy(attempts=None, total_s=20.0, base_s=0.02, max_s=0.2)


class Served:
    """A node's app on a real port (uvicorn in this event loop), stopped and started at will."""

    def __init__(self, node: MemoryNode) -> None:
        self.node = node
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Serve, and return once the port listens."""
        config = uvicorn.Config(self.node.app, host="127.0.0.1", port=self.port, lifespan="off", log_level="warning")
        self._server = uvicorn.Server(config)
        self._task = asyncio.create_task(self._server.serve())
        while not self._server.started:
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        """Stop serving: open WebSockets are closed."""
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            await self._task
            self._server = self._task = None


@pytest.fixture
async def served(node: MemoryNode) -> AsyncIterator[Served]:
    """``node`` served on a free port."""
    server = Served(node)
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def flux(served: Served) -> AsyncIterator[AsyncFluxClient]:
    """A client of the served node."""
    async with AsyncFluxClient(served.url) as client:
        yield client


async def publish(node: MemoryNode, entity_id: str, **properties: object) -> None:
    """Publish straight to the app (the server may be down)."""
    async with node.client() as http:
        response = await http.post("/api/events", json=event(entity_id, properties, stream="s", source="t"))
        assert response.status_code == 200, response.text


async def take(changes: Subscription, count: int, timeout: float = 10.0) -> list[Change]:
    """The next ``count`` changes."""
    return [await asyncio.wait_for(anext(changes), timeout) for _ in range(count)]


async def test_snapshot_then_live_changes_in_the_property_format(node: MemoryNode, flux: AsyncFluxClient) -> None:
    await publish(node, "sub/a", t=1)
    await publish(node, "sub/b", t=2)
    await publish(node, "other/c", t=3)
    async with flux.subscribe("sub/*") as changes:
        first = await take(changes, 3)
        assert [type(c) for c in first] == [Snapshot, Snapshot, SnapshotComplete]
        assert {c.entity.id for c in first if isinstance(c, Snapshot)} == {"sub/a", "sub/b"}
        assert all(not c.resync for c in first if isinstance(c, Snapshot | SnapshotComplete))
        assert first[2] == SnapshotComplete("sub/*", 2, False)
        await publish(node, "other/c", t=4)
        await publish(node, "sub/a", t=5, unit="C")
        await flux.delete("sub/b")
        live = await take(changes, 3)
        assert sorted((c.property, c.value) for c in live[:2] if isinstance(c, StateUpdate)) == [
            ("t", 5),
            ("unit", "C"),
        ]
        assert isinstance(live[2], EntityDeleted) and live[2].entity_id == "sub/b"


async def test_the_entity_format_and_several_patterns(node: MemoryNode, flux: AsyncFluxClient) -> None:
    async with flux.subscribe(["fmt/a", "fmt/b*"], format="entity", snapshot=False) as changes:
        await publish(node, "fmt/a", t=1)
        await publish(node, "fmt/bee", t=2)
        got = await take(changes, 2)
        assert [c.entity.id for c in got if isinstance(c, EntityUpdate)] == ["fmt/a", "fmt/bee"]
        assert isinstance(got[0], EntityUpdate) and got[0].entity.properties == {"t": 1}


async def test_after_the_server_comes_back_a_resync_snapshot_holds_what_was_missed(
    node: MemoryNode, served: Served, flux: AsyncFluxClient
) -> None:
    await publish(node, "rs/kept", v=1)
    await publish(node, "rs/gone", v=1)
    async with flux.subscribe("rs/*", reconnect=QUICK) as changes:
        assert len(await take(changes, 3)) == 3  # two snapshots and their end
        await served.stop()
        await publish(node, "rs/kept", v=2)  # missed live: the socket is down
        await publish(node, "rs/new", v=1)
        await flux_delete(node, "rs/gone")
        await asyncio.sleep(0.2)  # the subscription tries and fails to reconnect meanwhile
        await served.start()
        back = await take(changes, 4)
        assert isinstance(back[0], Reconnected) and back[0].attempts >= 1 and "1012" in back[0].reason
        resynced = {c.entity.id: c.entity.properties for c in back[1:3] if isinstance(c, Snapshot) and c.resync}
        assert resynced == {"rs/kept": {"v": 2}, "rs/new": {"v": 1}}  # rs/gone is absent: deleted meanwhile
        assert back[3] == SnapshotComplete("rs/*", 2, True)
        await publish(node, "rs/kept", v=3)
        assert await take(changes, 1) == [StateUpdate("rs/kept", "v", 3, back_timestamp(node, "rs/kept"))]
        assert changes.reconnects == 1


async def flux_delete(node: MemoryNode, entity_id: str) -> None:
    """Delete straight through the app."""
    async with node.client() as http:
        assert (await http.delete(f"/api/state/entities/{entity_id}")).status_code == 200


def back_timestamp(node: MemoryNode, entity_id: str) -> str:
    """The lastUpdated of an entity, read from the node's table."""
    entity = node.table.get(entity_id)
    assert entity is not None
    return str(entity["lastUpdated"])


async def test_a_subscription_the_node_cannot_serve_yet_is_sent_again(node: MemoryNode, served: Served) -> None:
    await publish(node, "wait/a", t=1)
    node.table.recovering = True  # partitions recovering: "try again shortly"
    asyncio.get_running_loop().call_later(0.3, setattr, node.table, "recovering", False)
    async with AsyncFluxClient(served.url) as flux, flux.subscribe("wait/*", reconnect=QUICK) as changes:
        got = await take(changes, 2)
        assert got == [Snapshot(Entity("wait/a", {"t": 1}, back_timestamp(node, "wait/a")), False), got[1]]
        assert got[1] == SnapshotComplete("wait/*", 1, False)


async def test_an_error_the_node_will_not_clear_ends_the_subscription() -> None:
    node = MemoryNode(node_settings(ws_snapshot_limit=1))
    server = Served(node)
    await server.start()
    try:
        await publish(node, "big/a", t=1)
        await publish(node, "big/b", t=1)
        async with AsyncFluxClient(server.url) as flux:
            subscription = flux.subscribe("big/*")
            with pytest.raises(SubscriptionError, match="FLUX_WS_SNAPSHOT_LIMIT") as refused:
                await subscription.start()
            assert refused.value.pattern == "big/*" and subscription.closed
            assert [c async for c in subscription] == []
    finally:
        await server.stop()


async def test_a_socket_closed_for_its_token_raises_unauthorized() -> None:
    node = MemoryNode(node_settings(**SECURED, public_reads=False))
    server = Served(node)
    await server.start()
    try:
        async with AsyncFluxClient(server.url, token="flux_wrong") as flux:
            with pytest.raises(Unauthorized):
                async with flux.subscribe("*"):
                    pass
    finally:
        await server.stop()


async def test_closing_ends_the_iteration_and_the_client_closes_its_subscriptions(
    node: MemoryNode, served: Served
) -> None:
    flux = AsyncFluxClient(served.url)
    changes = flux.subscribe("close/*", snapshot=False)
    await changes.start()
    waiting = asyncio.ensure_future(anext(changes, None))
    await asyncio.sleep(0.05)
    await flux.aclose()
    assert await asyncio.wait_for(waiting, 5) is None and changes.closed


async def test_a_node_that_never_answers_gives_up_after_the_reconnect_policy() -> None:
    nowhere = f"http://127.0.0.1:{free_port()}"
    async with AsyncFluxClient(nowhere) as flux:
        changes = flux.subscribe("*", reconnect=RetryPolicy(attempts=3, base_s=0.01))
        with pytest.raises(Unavailable, match="3 tries"):
            await changes.start()


def test_the_websocket_url_follows_the_base_url() -> None:
    from flux.client.subscription import websocket_url

    assert websocket_url("http://h:3000") == "ws://h:3000/api/ws"
    assert websocket_url("https://h/flux/") == "wss://h/flux/api/ws"
    assert httpx.URL(websocket_url("http://h:3000?x=1")).query == b""
