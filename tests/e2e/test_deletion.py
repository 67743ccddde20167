"""Deletion against a running Flux and a real broker: tombstones folded, late events, restarts.

Which ids a request deletes (percent-encoded ids, filters, limits, refusals) is proven in process:
tests/api/test_deletion_rules.py.
"""

from __future__ import annotations

import time
from typing import Any

from tests.flux_process import FluxProcess


def put(node: FluxProcess, entity_id: str, properties: dict[str, Any], **fields: Any) -> None:
    """Publish one event and wait until it is applied."""
    body = {"stream": "test", "source": "pytest", "payload": {"entity_id": entity_id, "properties": properties}}
    body.update(fields)
    response = node.client.post("/api/events?wait=true", json=body)
    assert response.status_code == 200, response.text


def listed(node: FluxProcess, prefix: str) -> list[str]:
    return [e["id"] for e in node.client.get("/api/state/entities", params={"prefix": prefix}).json()]


def test_delete_removes_the_entity_and_answers_with_the_tombstone_event_id(flux, uid):
    put(flux, f"{uid}/a", {"x": 1})
    response = flux.client.delete(f"/api/state/entities/{uid}/a?wait=true")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["entity_id"] == f"{uid}/a" and len(body["eventId"]) == 36
    assert flux.entity(f"{uid}/a").status_code == 404
    assert listed(flux, uid) == []


def test_an_event_after_deletion_creates_the_entity_anew_with_only_its_properties(flux, uid):
    put(flux, uid, {"old": 1, "kept": "no"})
    assert flux.client.delete(f"/api/state/entities/{uid}?wait=true").status_code == 200
    put(flux, uid, {"new": 2})
    assert flux.entity(uid).json()["properties"] == {"new": 2}


def test_a_late_event_older_than_the_tombstone_does_not_resurrect_the_entity(flux, uid):
    put(flux, uid, {"x": 1})
    assert flux.client.delete(f"/api/state/entities/{uid}?wait=true").status_code == 200
    put(flux, uid, {"x": 2}, timestamp=int(time.time() * 1000) - 60_000)
    assert flux.entity(uid).status_code == 404
    put(flux, uid, {"y": 3})  # a current event still creates it anew
    assert flux.entity(uid).json()["properties"] == {"y": 3}


def test_an_entity_with_future_timestamps_is_deleted_whole(flux, uid):
    future = int(time.time() * 1000) + 3_600_000
    put(flux, uid, {"x": 1}, timestamp=future)
    assert flux.client.delete(f"/api/state/entities/{uid}?wait=true").status_code == 200
    assert flux.entity(uid).status_code == 404


def test_deletion_survives_a_restart_and_a_rebuild_from_the_log(new_flux, uid):
    node = new_flux()
    put(node, f"{uid}/gone", {"x": 1})
    put(node, f"{uid}/kept", {"x": 1})
    assert node.client.delete(f"/api/state/entities/{uid}/gone?wait=true").status_code == 200
    node.stop()
    node.start()
    assert node.entity(f"{uid}/gone").status_code == 404
    assert node.entity(f"{uid}/kept").status_code == 200
