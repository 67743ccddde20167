"""Publishing over HTTP: single events, batches, validation errors, idempotent event ids."""

from __future__ import annotations

import re

import pytest


def test_published_event_becomes_the_entity_state(flux, uid):
    response = flux.publish(f"sensor-{uid}", {"temperature": 22.5, "unit": "celsius"}, timestamp=1739290200000)
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"eventId", "stream"} and body["stream"] == "test"
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}", body["eventId"])
    entity = flux.wait_entity(f"sensor-{uid}", lambda e: True)
    assert entity == {
        "id": f"sensor-{uid}",
        "properties": {"temperature": 22.5, "unit": "celsius"},
        "lastUpdated": "2025-02-11T16:10:00.000Z",
    }


def test_properties_merge_and_a_late_event_never_overwrites_a_newer_value(flux, uid):
    eid = f"merge-{uid}"
    flux.publish(eid, {"temperature": 22.5, "unit": "celsius"}, timestamp=1000)
    flux.publish(eid, {"temperature": 23.0}, timestamp=3000)
    flux.publish(eid, {"temperature": 99.0, "location": "lab-A"}, timestamp=2000)  # late: loses temperature only
    entity = flux.wait_entity(eid, lambda e: "location" in e["properties"])
    assert entity["properties"] == {"temperature": 23.0, "unit": "celsius", "location": "lab-A"}
    assert entity["lastUpdated"] == "1970-01-01T00:00:03.000Z"


def test_null_values_are_stored_and_any_json_value_is_kept(flux, uid):
    props = {"a": None, "b": [1, {"c": True}], "d": {"nested": "x"}, "e": "text", "f": -1.5}
    flux.publish(f"json-{uid}", props)
    assert flux.wait_entity(f"json-{uid}", lambda e: True)["properties"] == props


def test_resending_an_event_id_applies_it_once(flux, uid):
    eid = f"idem-{uid}"
    first = flux.publish(eid, {"v": 1}, timestamp=5000, eventId=f"evt-{uid}")
    flux.publish(eid, {"v": 2}, timestamp=6000)
    again = flux.publish(eid, {"v": 1}, timestamp=5000, eventId=f"evt-{uid}")
    assert first.json() == again.json() == {"eventId": f"evt-{uid}", "stream": "test"}
    flux.publish(eid, {"marker": True}, timestamp=7000)
    assert flux.wait_entity(eid, lambda e: "marker" in e["properties"])["properties"] == {"v": 2, "marker": True}


def test_batch_accepts_an_events_object_and_reports_each_result_in_order(flux, uid):
    events = [
        {"stream": "sensors", "source": "agent-01", "payload": {"entity_id": f"b1-{uid}", "properties": {"temp": 22}}},
        {"stream": "sensors", "payload": {"entity_id": f"b2-{uid}", "properties": {"temp": 23}}},
        {"stream": "sensors", "source": "agent-01", "payload": {"entity_id": f"b3-{uid}", "properties": {"temp": 24}}},
    ]
    response = flux.client.post("/api/events/batch", json={"events": events})
    assert response.status_code == 200
    body = response.json()
    assert body["successful"] == 2 and body["failed"] == 1
    assert [r["error"] is None for r in body["results"]] == [True, False, True]
    assert body["results"][1] == {"eventId": None, "stream": "sensors", "error": "events[1]: source is required"}
    flux.wait_entity(f"b3-{uid}", lambda e: e["properties"] == {"temp": 24})
    assert flux.entity(f"b1-{uid}").json()["properties"] == {"temp": 22}
    assert flux.entity(f"b2-{uid}").status_code == 404


def test_batch_accepts_a_bare_array(flux, uid):
    events = [
        {
            "stream": "s",
            "source": "a",
            "timestamp": 1708694400000 + i,
            "payload": {"entity_id": f"ns-{uid}/d{i}", "properties": {"i": i}},
        }
        for i in range(50)
    ]
    response = flux.client.post("/api/events/batch", json=events)
    assert response.status_code == 200 and response.json()["successful"] == 50
    flux.wait_for(
        lambda: len(flux.client.get(f"/api/state/entities?namespace=ns-{uid}").json()) == 50, what="50 entities"
    )


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"source": "a", "payload": {"entity_id": "x", "properties": {}}}, 400, "stream is required"),
        ({"stream": "s", "payload": {"entity_id": "x", "properties": {}}}, 400, "source is required"),
        ({"stream": 5, "source": "a", "payload": {"entity_id": "x", "properties": {}}}, 400, "stream must be a string"),
        ({"stream": "s", "source": "a"}, 400, "payload is required"),
        ({"stream": "s", "source": "a", "payload": []}, 400, "payload must be an object"),
        ({"stream": "s", "source": "a", "payload": {"properties": {}}}, 400, "payload.entity_id is required"),
        (
            {"stream": "s", "source": "a", "payload": {"entity_id": "", "properties": {}}},
            400,
            "payload.entity_id must not be empty",
        ),
        ({"stream": "s", "source": "a", "payload": {"entity_id": "x"}}, 400, "payload.properties is required"),
        (
            {"stream": "s", "source": "a", "payload": {"entity_id": "x", "properties": [1]}},
            400,
            "payload.properties must be an object",
        ),
        (
            {"stream": "s", "source": "a", "payload": {"entity_id": "x", "properties": "v"}},
            400,
            "payload.properties must be an object",
        ),
        (
            {"stream": "s", "source": "a", "timestamp": 1.5, "payload": {"entity_id": "x", "properties": {}}},
            400,
            "timestamp must be an integer",
        ),
        (
            {"stream": "s", "source": "a", "timestamp": "2024", "payload": {"entity_id": "x", "properties": {}}},
            400,
            "timestamp must be an integer",
        ),
        (
            {"stream": "s", "source": "a", "timestamp": True, "payload": {"entity_id": "x", "properties": {}}},
            400,
            "timestamp must be an integer",
        ),
        (
            {"stream": "s", "source": "a", "timestamp": -1, "payload": {"entity_id": "x", "properties": {}}},
            400,
            "timestamp must be between",
        ),
        (
            {"stream": "s", "source": "a", "eventId": 7, "payload": {"entity_id": "x", "properties": {}}},
            400,
            "eventId must be a non-empty string",
        ),
        ([1, 2], 400, "event must be a JSON object"),
    ],
)
def test_invalid_event_gets_a_json_error_naming_the_field(flux, body, status, message):
    response = flux.client.post("/api/events", json=body)
    assert response.status_code == status
    assert message in response.json()["error"]


@pytest.mark.parametrize(
    ("raw", "message"),
    [(b"{bad", "malformed JSON"), (b"", "request body is empty"), (b"\xff\xfe", "malformed JSON")],
)
def test_malformed_body_gets_400(flux, raw, message):
    for path in ("/api/events", "/api/events/batch"):
        response = flux.client.post(path, content=raw, headers={"content-type": "application/json"})
        assert response.status_code == 400
        assert message in response.json()["error"]


def test_batch_errors_name_the_index(flux):
    cases = [
        ({"nope": []}, 'batch must be {"events": [...]}'),
        ({"events": {}}, "events must be an array"),
        ([], "batch is empty"),
    ]
    for body, message in cases:
        response = flux.client.post("/api/events/batch", json=body)
        assert response.status_code == 400 and message in response.json()["error"]
    response = flux.client.post("/api/events/batch", json=[{"stream": "s"}, 3])
    assert response.status_code == 400
    body = response.json()
    assert body["error"] == "no valid events in the batch"
    assert [r["error"] for r in body["results"]] == [
        "events[0]: source is required",
        "events[1]: event must be a JSON object, got number",
    ]


def test_event_larger_than_the_limit_gets_413(flux, uid):
    response = flux.publish(f"big-{uid}", {"blob": "x" * 70_000})
    assert response.status_code == 413
    assert "limit of 65536 bytes" in response.json()["error"]


def test_unknown_route_and_method_get_json_errors(flux):
    assert flux.client.get("/api/nope").json() == {"error": "Not Found"}
    response = flux.client.delete("/api/events")
    assert response.status_code == 405 and "error" in response.json()
