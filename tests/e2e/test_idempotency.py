"""X-Idempotency-Key on the publish endpoints, on a real broker: replayed answers, reused keys, durability."""

from __future__ import annotations

import uuid
from typing import Any

from tests.conftest import NodeFactory
from tests.flux_process import FluxProcess


def event(entity_id: str, **props: Any) -> dict[str, Any]:
    return {
        "stream": "s",
        "source": "a",
        "timestamp": 1_700_000_000_000,
        "payload": {"entity_id": entity_id, "properties": props},
    }


def keyed(key: str) -> dict[str, str]:
    return {"X-Idempotency-Key": key}


def history(node: FluxProcess, entity: str) -> list[dict]:
    return node.client.get("/api/events", params={"entity": entity, "since": "0"}).json()  # type: ignore[no-any-return]


def test_a_retried_publish_gets_the_first_answer_and_is_applied_once(flux: FluxProcess, uid: str) -> None:
    key = f"k-{uuid.uuid4()}"
    body = event(f"i{uid}/a", v=1)  # no eventId: one is derived from the key
    first = flux.client.post("/api/events", json=body, headers=keyed(key), params={"wait": "true"})
    again = flux.client.post("/api/events", json=body, headers=keyed(key))
    assert first.status_code == again.status_code == 200
    assert again.json() == first.json() and again.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    assert [e["eventId"] for e in history(flux, f"i{uid}/a")] == [first.json()["eventId"]]


def test_the_same_key_with_another_body_is_422(flux: FluxProcess, uid: str) -> None:
    key = f"k-{uuid.uuid4()}"
    assert flux.client.post("/api/events", json=event(f"i{uid}/b", v=1), headers=keyed(key)).status_code == 200
    reused = flux.client.post("/api/events", json=event(f"i{uid}/b", v=2), headers=keyed(key))
    assert reused.status_code == 422 and "different body" in reused.json()["error"]
    spaced = flux.client.post(  # the same JSON written differently is the same body
        "/api/events",
        content=b'{ "payload": {"properties": {"v": 1}, "entity_id": "i' + uid.encode() + b'/b"},'
        b' "timestamp": 1700000000000, "source": "a", "stream": "s" }',
        headers={**keyed(key), "content-type": "application/json"},
    )
    assert spaced.status_code == 200 and spaced.headers["idempotent-replayed"] == "true"


def test_a_retried_batch_is_replayed_and_its_events_applied_once(flux: FluxProcess, uid: str) -> None:
    key = f"k-{uuid.uuid4()}"
    batch = [event(f"i{uid}/c", n=n) for n in range(5)] + [{"stream": "s"}]
    first = flux.client.post("/api/events/batch", json=batch, headers=keyed(key), params={"wait": "true"})
    again = flux.client.post("/api/events/batch", json=batch, headers=keyed(key))
    assert first.status_code == 200 and again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true"
    assert len(history(flux, f"i{uid}/c")) == 5
    assert flux.client.post("/api/events", json=event(f"i{uid}/c"), headers=keyed("")).status_code == 422


def test_keys_survive_a_restart_and_are_honoured_by_every_process(new_flux: NodeFactory, uid: str) -> None:
    first_node = new_flux(2)
    other_node = new_flux(join=first_node)
    key = f"k-{uuid.uuid4()}"
    body = [event(f"i{uid}/d", v=1)]
    answer = first_node.client.post("/api/events/batch", json=body, headers=keyed(key))
    assert answer.status_code == 200
    on_other = other_node.wait_for(
        lambda: (
            (r := other_node.client.post("/api/events/batch", json=body, headers=keyed(key))).headers.get(
                "idempotent-replayed"
            )
            and r
        ),
        what="the other process replays the answer",
    )
    assert on_other.json() == answer.json()
    other_node.stop()
    first_node.stop()
    first_node.start()
    after = first_node.client.post("/api/events/batch", json=body, headers=keyed(key))
    assert after.headers["idempotent-replayed"] == "true" and after.json() == answer.json()
