"""``?wait=true`` against a running Flux and a real broker: a write answered is a write readable."""

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


def test_a_wait_that_times_out_is_504_naming_the_pending_events_which_still_apply(flux, uid):
    response = flux.client.post("/api/events?wait=true&wait_timeout_ms=1", json=event(uid, late=True))
    assert response.status_code == 504
    body = response.json()
    assert "not applied within 1 ms" in body["error"]
    assert body["pending"] == [body["eventId"]]
    assert flux.wait_entity(uid, lambda e: e["properties"] == {"late": True})


def test_a_batch_wait_that_times_out_lists_the_pending_event_ids(flux, uid):
    events = [event(f"{uid}/{i}", v=i) for i in range(10)]
    response = flux.client.post("/api/events/batch?wait=true&wait_timeout_ms=1", json=events)
    assert response.status_code == 504
    body = response.json()
    assert body["successful"] == 10
    assert set(body["pending"]) <= {r["eventId"] for r in body["results"]} and body["pending"]


def test_a_wait_timeout_above_the_maximum_is_422_and_publishes_nothing(flux, uid):
    response = flux.client.post("/api/events?wait=true&wait_timeout_ms=600000", json=event(uid, x=1))
    assert response.status_code == 422
    assert "wait_timeout_ms" in response.json()["error"]
    flux.client.post("/api/events?wait=true", json=event(f"{uid}-marker", x=1))  # later than the refused one
    assert flux.entity(uid).status_code == 404
