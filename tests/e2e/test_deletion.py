"""Deletion against a running Flux and a real broker: tombstones, batch filters, limits, restarts."""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.flux_process import FluxProcess


def put(node: FluxProcess, entity_id: str, properties: dict[str, Any], **fields: Any) -> None:
    """Publish one event and wait until it is applied."""
    body = {"stream": "test", "source": "pytest", "payload": {"entity_id": entity_id, "properties": properties}}
    body.update(fields)
    response = node.client.post("/api/events?wait=true", json=body)
    assert response.status_code == 200, response.text


def put_many(node: FluxProcess, ids: list[str]) -> None:
    """Publish one event for each id and wait until all are applied."""
    events = [{"stream": "s", "source": "pytest", "payload": {"entity_id": i, "properties": {"n": 1}}} for i in ids]
    response = node.client.post("/api/events/batch?wait=true", json=events)
    assert response.status_code == 200 and response.json()["successful"] == len(ids), response.text


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


def test_delete_accepts_a_percent_encoded_slash(flux, uid):
    put(flux, f"{uid}/b", {"x": 1})
    assert flux.client.delete(f"/api/state/entities/{uid}%2Fb?wait=true").json()["entity_id"] == f"{uid}/b"
    assert flux.entity(f"{uid}/b").status_code == 404


def test_deleting_an_unknown_entity_is_404(flux, uid):
    response = flux.client.delete(f"/api/state/entities/{uid}/never")
    assert response.status_code == 404
    assert response.json() == {"error": "Entity not found"}


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


def test_batch_delete_by_prefix_namespace_and_ids(flux, uid):
    put_many(
        flux,
        [f"{uid}-p-{i}" for i in range(5)] + [f"{uid}/n-{i}" for i in range(4)] + [f"{uid}.k{i}" for i in range(3)],
    )

    by_prefix = flux.client.post("/api/state/entities/delete?wait=true", json={"prefix": f"{uid}-p-"})
    assert by_prefix.json() == {"deleted": 5, "failed": 0, "errors": []}
    assert listed(flux, f"{uid}-p-") == []

    by_namespace = flux.client.post("/api/state/entities/delete?wait=true", json={"namespace": uid})
    assert by_namespace.json() == {"deleted": 4, "failed": 0, "errors": []}
    assert listed(flux, f"{uid}/") == []

    ids = [f"{uid}.k0", f"{uid}.k1", f"{uid}.missing"]
    by_ids = flux.client.post("/api/state/entities/delete?wait=true", json={"entity_ids": ids})
    assert by_ids.json() == {
        "deleted": 2,
        "failed": 1,
        "errors": [{"entity_id": f"{uid}.missing", "error": "Entity not found"}],
    }
    assert listed(flux, uid) == [f"{uid}.k2"]


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"prefix": "a", "namespace": "b"},
        {"prefix": ""},
        {"entity_ids": []},
        {"entity_ids": [1]},
        [],
        {"namespace": "a/b"},
    ],
)
def test_batch_delete_needs_exactly_one_valid_filter(flux, body):
    response = flux.client.post("/api/state/entities/delete", json=body)
    assert response.status_code == 400
    assert isinstance(response.json()["error"], str)


def test_batch_delete_over_the_limit_is_refused_and_deletes_nothing(flux, uid):
    ids = [f"{uid}-{i:03d}" for i in range(51)]  # the module's node has FLUX_DELETE_BATCH_LIMIT=50
    put_many(flux, ids)
    response = flux.client.post("/api/state/entities/delete", json={"prefix": uid})
    assert response.status_code == 400
    assert "50" in response.json()["error"] and "nothing was deleted" in response.json()["error"]
    by_ids = flux.client.post("/api/state/entities/delete", json={"entity_ids": ids})
    assert by_ids.status_code == 400
    assert len(listed(flux, uid)) == 51


def test_deletion_survives_a_restart_and_a_rebuild_from_the_log(new_flux, uid):
    node = new_flux()
    put(node, f"{uid}/gone", {"x": 1})
    put(node, f"{uid}/kept", {"x": 1})
    assert node.client.delete(f"/api/state/entities/{uid}/gone?wait=true").status_code == 200
    node.stop()
    node.start()
    assert node.entity(f"{uid}/gone").status_code == 404
    assert node.entity(f"{uid}/kept").status_code == 200
