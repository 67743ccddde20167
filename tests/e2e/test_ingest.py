"""Publishing over HTTP to a real broker: events become state, merge by time, keep any JSON value, apply once.

Request validation, batch results per item and size limits are proven in process: tests/api/test_publish.py.
"""

from __future__ import annotations

import re


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
