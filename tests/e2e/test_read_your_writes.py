"""``?wait=true`` against a running Flux and a real broker: a write answered is a write readable.

The 504 of a wait that times out and the bounds of ``wait_timeout_ms`` are proven in process:
tests/api/test_publish.py.
"""

from __future__ import annotations


def event(entity_id: str, **properties: object) -> dict[str, object]:
    return {"stream": "test", "source": "pytest", "payload": {"entity_id": entity_id, "properties": properties}}


def test_a_get_right_after_a_waited_publish_sees_the_event(flux, uid):
    for n in range(20):
        response = flux.client.post("/api/events?wait=true", json=event(uid, n=n))
        assert response.status_code == 200, response.text
        assert set(response.json()) == {"eventId", "stream"}
        assert flux.entity(uid).json()["properties"] == {"n": n}


def test_a_listing_right_after_a_waited_batch_sees_every_event(flux, uid):
    ids = [f"{uid}/{i:03d}" for i in range(200)]
    response = flux.client.post("/api/events/batch?wait=true", json={"events": [event(i, v=1) for i in ids]})
    assert response.status_code == 200 and response.json()["successful"] == 200
    listed = flux.client.get("/api/state/entities", params={"namespace": uid, "limit": 1000}).json()
    assert [e["id"] for e in listed] == ids
