"""WS /api/ws against a running Flux and a real broker: subscriptions, formats, snapshot, metrics, drops.

Protocol errors, who may subscribe to what, and the subscription and snapshot limits are proven in process:
tests/api/test_websocket.py.
"""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any

import httpx
import pytest

from tests.ws_client import StuckClient, Subscriber

RFC3339_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


async def publish(client: httpx.AsyncClient, entity_id: str, properties: dict[str, Any], **fields: Any) -> None:
    body = {"stream": "test", "source": "pytest", "payload": {"entity_id": entity_id, "properties": properties}}
    body.update(fields)
    response = await client.post("/api/events?wait=true", json=body)
    assert response.status_code == 200, response.text


def updates(messages: list[dict[str, Any]]) -> list[tuple[str, str, Any]]:
    return [(m["entity_id"], m["property"], m["value"]) for m in messages if m["type"] == "state_update"]


@pytest.fixture
async def client(flux):
    async with httpx.AsyncClient(base_url=flux.url, timeout=30) as http:
        yield http


async def test_exact_subscription_gets_one_state_update_per_changed_property(flux, client, uid):
    async with Subscriber(flux.url) as ws:
        ack = await ws.subscribe(f"{uid}/a")
        assert ack == {"type": "subscribed", "entity_id": f"{uid}/a", "format": "property", "snapshot": False}
        await publish(client, f"{uid}/b", {"t": 0})
        await publish(client, f"{uid}/a", {"t": 1, "unit": "C"})
        got = await ws.collect(lambda r: len(r) >= 2)
        assert sorted(updates(got)) == [(f"{uid}/a", "t", 1), (f"{uid}/a", "unit", "C")]
        assert all(RFC3339_MS.match(m["timestamp"]) for m in got)
        await publish(client, f"{uid}/a", {"t": 1, "unit": "F"})  # t unchanged: only unit is sent
        got = await ws.collect(lambda r: len(r) >= 1)
        assert updates(got) == [(f"{uid}/a", "unit", "F")]
        assert await ws.quiet_for(0.5) == []


async def test_prefix_and_wildcard_subscriptions_cover_their_entities(flux, client, uid):
    async with Subscriber(flux.url) as prefix, Subscriber(flux.url) as everything:
        await prefix.subscribe(f"{uid}/*")
        await everything.subscribe("*")
        await publish(client, f"{uid}/x", {"n": 1})
        await publish(client, f"{uid}-other/y", {"n": 2})
        await publish(client, f"{uid}/z", {"n": 3})
        got = await prefix.collect(lambda r: len(r) >= 2)
        assert updates(got) == [(f"{uid}/x", "n", 1), (f"{uid}/z", "n", 3)]
        assert await prefix.quiet_for(0.3) == []
        seen = await everything.collect(lambda r: len([m for m in r if uid in m["entity_id"]]) >= 3)
        assert [(e, p, v) for e, p, v in updates(seen) if uid in e] == [
            (f"{uid}/x", "n", 1),
            (f"{uid}-other/y", "n", 2),
            (f"{uid}/z", "n", 3),
        ]


async def test_unsubscribe_stops_updates_and_is_acknowledged(flux, client, uid):
    async with Subscriber(flux.url) as ws:
        await ws.subscribe(f"{uid}/a")
        await ws.subscribe(f"{uid}/sentinel")
        await ws.send({"type": "unsubscribe", "entity_id": f"{uid}/a"})
        assert await ws.next_of("unsubscribed") == {"type": "unsubscribed", "entity_id": f"{uid}/a"}
        await publish(client, f"{uid}/a", {"n": 1})
        await publish(client, f"{uid}/sentinel", {"n": 1})
        got = await ws.collect(lambda r: any(m.get("entity_id") == f"{uid}/sentinel" for m in r))
        assert [m["entity_id"] for m in got] == [f"{uid}/sentinel"]


async def test_entity_id_spelling_of_seed_002_gets_whole_entity_updates_and_format_is_selectable(flux, client, uid):
    async with Subscriber(flux.url) as ws:
        await ws.send({"type": "subscribe", "entityId": f"{uid}/a"})
        assert (await ws.next_of("subscribed"))["format"] == "entity"
        await ws.subscribe(f"{uid}/b", format="entity")
        await publish(client, f"{uid}/a", {"temperature": 24.0})
        await publish(client, f"{uid}/a", {"unit": "C"})
        await publish(client, f"{uid}/b", {"x": 1})
        got = await ws.collect(lambda r: len(r) >= 3)
        assert [m["type"] for m in got] == ["update", "update", "update"]
        assert got[1]["entity"]["id"] == f"{uid}/a"
        assert got[1]["entity"]["properties"] == {"temperature": 24.0, "unit": "C"}
        assert RFC3339_MS.match(got[1]["entity"]["lastUpdated"])
        assert got[2]["entity"]["properties"] == {"x": 1}


async def test_a_late_event_that_loses_the_merge_sends_nothing(flux, client, uid):
    async with Subscriber(flux.url) as ws:
        await ws.subscribe(f"{uid}/a")
        now = int(time.time() * 1000)
        await publish(client, f"{uid}/a", {"t": "new"}, timestamp=now)
        assert updates(await ws.collect(lambda r: len(r) >= 1)) == [(f"{uid}/a", "t", "new")]
        await publish(client, f"{uid}/a", {"t": "old"}, timestamp=now - 60_000)
        assert await ws.quiet_for(0.7) == []


async def test_deleting_an_entity_sends_entity_deleted(flux, client, uid):
    async with Subscriber(flux.url) as ws:
        await publish(client, f"{uid}/a", {"t": 1})
        await ws.subscribe(f"{uid}/*")
        response = await client.delete(f"/api/state/entities/{uid}/a")
        assert response.status_code == 200
        got = await ws.collect(lambda r: len(r) >= 1)
        assert got[0]["type"] == "entity_deleted" and got[0]["entity_id"] == f"{uid}/a"
        assert RFC3339_MS.match(got[0]["timestamp"])


async def test_updates_of_one_entity_arrive_in_the_order_they_were_applied(flux, client, uid):
    async with Subscriber(flux.url) as ws:
        await ws.subscribe(f"{uid}/seq")
        batch = [
            {
                "stream": "s",
                "source": "p",
                "timestamp": 1_700_000_000_000 + i,
                "payload": {"entity_id": f"{uid}/seq", "properties": {"n": i}},
            }
            for i in range(300)
        ]
        for start in range(0, 300, 50):  # several batches and transactions; each batch's events in order
            assert (await client.post("/api/events/batch", json=batch[start : start + 50])).status_code == 200
        got = await ws.collect(lambda r: any(m.get("value") == 299 for m in r))
        values = [m["value"] for m in got]
        assert values == sorted(values) and values[-1] == 299


async def test_snapshot_then_live_stream_has_no_gap_and_no_duplicate_under_concurrent_writes(flux, client, uid):
    entities = [f"{uid}/e{i:02d}" for i in range(20)]
    for entity in entities:
        await publish(client, entity, {"n": 0})

    async def writer() -> None:
        for n in range(1, 31):
            body = [
                {"stream": "s", "source": "w", "payload": {"entity_id": e, "properties": {"n": n}}} for e in entities
            ]
            assert (await client.post("/api/events/batch", json=body)).status_code == 200

    async with Subscriber(flux.url) as ws:
        writing = asyncio.create_task(writer())
        await asyncio.sleep(0.05)
        await ws.send({"type": "subscribe", "entity_id": f"{uid}/*", "snapshot": True})
        await writing
        got = await ws.collect(lambda r: sum(1 for m in r if m.get("value") == 30) >= len(entities))
    kinds = [m["type"] for m in got]
    assert kinds[0] == "subscribed"
    done = kinds.index("snapshot_complete")
    assert set(kinds[1:done]) == {"snapshot"} and len(kinds[1:done]) == len(entities)
    assert got[done]["count"] == len(entities)
    assert "snapshot" not in kinds[done + 1 :]
    for entity in entities:
        snapshot = next(
            m["entity"]["properties"]["n"] for m in got if m["type"] == "snapshot" and m["entity"]["id"] == entity
        )
        live = [m["value"] for m in got if m["type"] == "state_update" and m["entity_id"] == entity]
        # every value after the snapshot's, each exactly once, in order: no gap, no duplicate
        assert live == list(range(snapshot + 1, 31)), (entity, snapshot, live)


async def test_metrics_update_reaches_every_connection_every_two_seconds(flux, client, uid):
    await publish(client, f"{uid}/a", {"t": 1})
    async with Subscriber(flux.url) as ws:
        first = await ws.next_of("metrics_update", timeout=5)
        t0 = time.monotonic()
        second = await ws.next_of("metrics_update", timeout=5)
        assert 1.5 <= time.monotonic() - t0 <= 2.6
    for message in (first, second):
        assert set(message) == {"type", "timestamp", "entities", "events", "websocket", "publishers"}
        assert RFC3339_MS.match(message["timestamp"])
        assert message["entities"]["total"] >= 1 and message["events"]["total"] >= 1
        assert message["events"]["rate_per_second"] >= 0
        assert message["websocket"]["connections"] >= 1 and message["publishers"]["active"] >= 1


async def test_a_stuck_subscriber_is_dropped_with_1008_while_a_fast_one_gets_everything(new_flux, uid):
    node = new_flux(FLUX_WS_QUEUE_LIMIT="2000")
    pad = "x" * 2000  # 6,000 events make 12,000 messages (~13 MB): more than kernel buffers and the limit
    events = [
        {"stream": "s", "source": "p", "payload": {"entity_id": f"{uid}/{i}", "properties": {"pad": pad, "i": i}}}
        for i in range(6000)
    ]
    stuck = StuckClient(node.url)
    stuck.subscribe("*")

    def read_once_dropped() -> tuple[int, str, int]:
        # A dropped client gets a grace period to read its close frame: start reading at once.
        node.wait_for(lambda: "flux_websocket_dropped_total 1" in node.client.get("/metrics").text, 60, "the drop")
        return stuck.read_until_close()

    try:
        async with httpx.AsyncClient(base_url=node.url, timeout=30) as http, Subscriber(node.url) as fast:
            await fast.subscribe(f"{uid}/1*")  # a share of the entities: 1, 10-19, 100-199, 1000-1999
            wanted = {e["payload"]["entity_id"] for e in events if e["payload"]["entity_id"].startswith(f"{uid}/1")}
            stuck_reading = asyncio.create_task(asyncio.to_thread(read_once_dropped))
            fast_reading = asyncio.create_task(  # the fast client reads all along, as a live client does
                fast.collect(lambda r: {m["entity_id"] for m in r if m.get("property") == "i"} >= wanted, 90)
            )
            for start in range(0, len(events), 500):
                assert (await http.post("/api/events/batch", json=events[start : start + 500])).status_code == 200
            got = await fast_reading
            assert {m["entity_id"] for m in got if m.get("property") == "i"} == wanted
            # The stuck client, reading only after its drop: what was buffered, then the close frame.
            code, reason, frames = await stuck_reading
        assert code == 1008 and "too slow" in reason
        assert 0 < frames < 12_000
    finally:
        stuck.close()


async def test_every_node_of_a_deployment_relays_every_update_to_its_own_subscribers(new_flux, uid):
    first = new_flux()
    second = new_flux(join=first)

    def split() -> bool:  # the two nodes' reducers share the partitions out
        owned = [set(node.client.get("/ready").json().get("partitions", [])) for node in (first, second)]
        return all(owned) and not owned[0] & owned[1] and len(owned[0] | owned[1]) == first.partitions

    first.wait_for(split, 60, "the partitions to be split between the nodes")
    ids = [f"{uid}/{i}" for i in range(40)]  # spread over every partition
    async with Subscriber(first.url) as on_first, Subscriber(second.url) as on_second:
        await on_first.subscribe("*")
        await on_second.subscribe(f"{uid}/*")
        async with httpx.AsyncClient(base_url=first.url, timeout=30) as http:
            events = [{"stream": "s", "source": "p", "payload": {"entity_id": i, "properties": {"v": 1}}} for i in ids]
            response = await http.post("/api/events/batch", json=events)
            assert response.status_code == 200 and response.json()["successful"] == len(ids)

        def all_ids(received: list[dict[str, Any]]) -> bool:
            return {m.get("entity_id") for m in received} >= set(ids)

        for subscriber in (on_first, on_second):
            got = await subscriber.collect(all_ids, timeout=60)
            assert {m["entity_id"] for m in got if m["type"] == "state_update"} >= set(ids)
