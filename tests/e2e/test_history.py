"""History (GET /api/events), time travel (?at=) and applied-once eventIds, on a real broker.

The parameters of both (time forms, windows, filters, pages through Link headers, refusals) are proven in
process: tests/api/test_history_params.py and tests/api/test_state_reads.py.
"""

from __future__ import annotations

import shutil
import threading
import time
import uuid
from typing import Any
from urllib.parse import urlsplit

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flux.model.reducer import fold, rfc3339_ms, to_entity
from tests.flux_process import FluxProcess

T0 = 1_700_000_000_000  # 2023-11-14T22:13:20Z


def event(
    entity_id: str, ts: int, event_id: str | None = None, stream: str = "s", source: str = "a", **props: Any
) -> dict:
    body: dict[str, Any] = {
        "stream": stream,
        "source": source,
        "timestamp": ts,
        "payload": {"entity_id": entity_id, "properties": props},
    }
    if event_id is not None:
        body["eventId"] = event_id
    return body


def publish_all(flux: FluxProcess, events: list[dict]) -> None:
    response = flux.client.post("/api/events/batch", json=events, params={"wait": "true"})
    assert response.status_code == 200, response.text


def history(flux: FluxProcess, **params: Any) -> list[dict]:
    response = flux.client.get("/api/events", params={"since": "0", **params})
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def all_pages(flux: FluxProcess, **params: Any) -> tuple[list[dict], int]:
    """Every page, following the Link headers; returns the events and the number of pages."""
    response = flux.client.get("/api/events", params={"since": "0", **params})
    events, pages = [], 0
    while True:
        assert response.status_code == 200, response.text
        events += response.json()
        pages += 1
        link = response.headers.get("link")
        if link is None:
            return events, pages
        target = urlsplit(link[1 : link.index(">")])
        response = flux.client.get(f"{target.path}?{target.query}")


def test_an_entity_history_lists_its_events_in_time_order_as_published(flux: FluxProcess, uid: str) -> None:
    entity = f"h{uid}/s1"
    publish_all(flux, [event(entity, T0 + 2, "e2", t=2), event(entity, T0 + 1, "e1", t=1), event(entity, T0 + 3, t=3)])
    found = history(flux, entity=entity)
    assert [e["payload"]["properties"]["t"] for e in found] == [1, 2, 3]
    assert found[0] == {"eventId": "e1", **event(entity, T0 + 1, t=1)}
    assert [e["timestamp"] for e in history(flux, entity=entity, order="desc")] == [T0 + 3, T0 + 2, T0 + 1]
    assert history(flux, entity=f"h{uid}/never") == []


def test_paging_while_new_events_arrive_neither_skips_nor_repeats(flux: FluxProcess, uid: str) -> None:
    entity = f"h{uid}/live"
    publish_all(flux, [event(entity, T0 + i, f"a{i:05d}", i=i) for i in range(300)])
    stop = threading.Event()

    def writer() -> None:
        i = 300
        while not stop.is_set():
            publish_all(flux, [event(entity, T0 + i, f"a{i:05d}", i=i)])
            i += 1

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        found, _ = all_pages(flux, entity=entity, limit=25)
    finally:
        stop.set()
        thread.join()
    seen = [e["payload"]["properties"]["i"] for e in found]
    assert seen == list(range(len(seen))) and len(seen) >= 300


def test_a_resent_event_id_is_applied_and_stored_once(flux: FluxProcess, uid: str) -> None:
    entity = f"h{uid}/dup"
    publish_all(flux, [event(entity, T0 + 10, "same-id", v=1)])
    publish_all(flux, [event(entity, T0 + 20, "same-id", v=2)])  # a retry with another timestamp and body
    assert flux.client.post("/api/events", json=event(entity, T0 + 30, "same-id", v=3)).status_code == 200
    publish_all(flux, [event(entity, T0 + 5, "other-id", w=1)])
    found = history(flux, entity=entity)
    assert [e["eventId"] for e in found] == ["other-id", "same-id"]
    assert found[1]["payload"]["properties"] == {"v": 1}
    assert flux.entity(entity).json()["properties"] == {"v": 1, "w": 1}


def test_a_late_event_changes_the_past_but_not_the_present(flux: FluxProcess, uid: str) -> None:
    entity = f"h{uid}/late"
    publish_all(flux, [event(entity, T0 + 1000, temp=30)])
    publish_all(flux, [event(entity, T0 + 500, temp=10, humidity=40)])  # a backfill, older than what we have
    assert flux.entity(entity).json()["properties"] == {"temp": 30, "humidity": 40}
    past = flux.client.get(f"/api/state/entities/{entity}", params={"at": str(T0 + 600)}).json()
    assert past["properties"] == {"temp": 10, "humidity": 40}
    assert [e["timestamp"] for e in history(flux, entity=entity)] == [T0 + 500, T0 + 1000]


def test_at_before_a_deletion_shows_the_entity_and_after_it_404(flux: FluxProcess, uid: str) -> None:
    entity = f"h{uid}/del"
    publish_all(flux, [event(entity, T0, v=1)])
    deleted = flux.client.delete(f"/api/state/entities/{entity}", params={"wait": "true"})
    assert deleted.status_code == 200
    tombstone = history(flux, entity=entity)[-1]
    assert tombstone["op"] == "delete"
    before = flux.client.get(f"/api/state/entities/{entity}", params={"at": str(tombstone["timestamp"] - 1)})
    assert before.status_code == 200 and before.json()["properties"] == {"v": 1}
    assert (
        flux.client.get(f"/api/state/entities/{entity}", params={"at": str(tombstone["timestamp"])}).status_code == 404
    )


timeline = st.lists(
    st.tuples(
        st.integers(0, 30),  # timestamp offset: ties happen, eventIds break them
        st.one_of(st.none(), st.dictionaries(st.sampled_from("abc"), st.integers(0, 9), min_size=1, max_size=2)),
    ),
    min_size=1,
    max_size=12,
)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(items=timeline, order=st.randoms(use_true_random=False), cuts=st.lists(st.integers(-1, 31), max_size=4))
def test_at_any_time_is_the_fold_of_the_events_up_to_it_whatever_the_publish_order(
    flux: FluxProcess, items: list[tuple[int, dict[str, int] | None]], order: Any, cuts: list[int]
) -> None:
    entity = f"prop-{uuid.uuid4().hex[:10]}"
    envelopes: list[dict[str, Any]] = []
    for i, (offset, props) in enumerate(items):
        body: dict[str, Any] = {"stream": "s", "source": "p", "timestamp": T0 + offset, "eventId": f"e{i:03d}"}
        if props is None:
            body.update(op="delete", payload={"entity_id": entity})
        else:
            body["payload"] = {"entity_id": entity, "properties": props}
        envelopes.append(body)
    shuffled = envelopes[:]
    order.shuffle(shuffled)
    for chunk in (shuffled[: len(shuffled) // 2], shuffled[len(shuffled) // 2 :]):  # two batches, any order
        if chunk:
            publish_all(flux, chunk)

    def expected(until: int | None) -> dict[str, Any] | None:
        return to_entity(entity, fold([e for e in envelopes if until is None or e["timestamp"] <= until]))

    current = flux.entity(entity)
    assert (current.json() if current.status_code == 200 else None) == expected(None)
    for cut in [*cuts, *(offset for offset, _ in items)]:
        at = flux.client.get(f"/api/state/entities/{entity}", params={"at": str(T0 + max(0, cut))})
        assert at.status_code in (200, 404), at.text
        assert (at.json() if at.status_code == 200 else None) == expected(T0 + max(0, cut)), cut


def test_a_read_after_waiting_sees_an_event_that_only_moved_last_updated(flux: FluxProcess, uid: str) -> None:
    for n in range(20):  # before the fix about every other read showed the older lastUpdated
        entity = f"h{uid}/same-{n}"
        publish_all(flux, [event(entity, T0, a=0)])
        publish_all(flux, [event(entity, T0 + 1, a=0)])  # the same value, a newer time
        assert flux.entity(entity).json() == {"id": entity, "properties": {"a": 0}, "lastUpdated": rfc3339_ms(T0 + 1)}


def test_a_list_at_a_past_time(flux: FluxProcess, uid: str) -> None:
    ns = f"h{uid}"
    publish_all(flux, [event(f"{ns}/a", T0 + 1, v=1), event(f"{ns}/b", T0 + 5, v=2), event(f"{ns}/a", T0 + 9, v=3)])
    then = flux.client.get("/api/state/entities", params={"namespace": ns, "at": str(T0 + 5)}).json()
    assert [(e["id"], e["properties"]) for e in then] == [(f"{ns}/a", {"v": 1}), (f"{ns}/b", {"v": 2})]
    early = flux.client.get("/api/state/entities", params={"namespace": ns, "at": str(T0 + 2)}).json()
    assert [e["id"] for e in early] == [f"{ns}/a"]


def test_history_is_rebuilt_from_the_events_topic_after_losing_local_rocksdb(new_flux: Any, uid: str) -> None:
    node = new_flux(2)
    entity = f"h{uid}/rebuilt"
    publish_all(node, [event(entity, T0 + i, f"r{i:04d}", i=i) for i in range(600)])
    publish_all(node, [event(f"h{uid}/other-{i}", T0 + i, i=i) for i in range(200)])
    before, _ = all_pages(node, entity=entity, limit=1000)
    assert len(before) == 600
    time.sleep(2.5)  # the group commits its offsets every second
    node.kill()
    shutil.rmtree(node.workdir / "data")
    node.start()

    def rebuilt() -> list[dict] | None:
        response = node.client.get("/api/events", params={"entity": entity, "since": "0", "limit": "1000"})
        if response.status_code == 503:
            assert (
                "rebuilt from the events topic" in response.json()["error"]
                or "not being served" in response.json()["error"]
            )
            return None
        assert response.status_code == 200, response.text
        return response.json() if len(response.json()) == 600 else None

    assert node.wait_for(rebuilt, timeout=60, what="history rebuilt") == before
    publish_all(node, [event(entity, T0 + 5000, "r0001", i=-1)])  # a re-send of an old event: still applied once
    assert len(history(node, entity=entity, limit=1000)) == 600
    assert node.entity(entity).json()["properties"]["i"] == 599


def pages_of(flux: FluxProcess, path: str, params: dict[str, str]) -> list[list[str]]:
    """The ids of every page of a list, following its Link headers."""
    response = flux.client.get(path, params=params)
    pages = []
    while True:
        assert response.status_code == 200, response.text
        pages.append([entity["id"] for entity in response.json()])
        link = response.headers.get("link")
        if link is None:
            return pages
        target = urlsplit(link[1 : link.index(">")])
        response = flux.client.get(f"{target.path}?{target.query}")


def test_list_pages_are_bounded_on_every_node_of_a_cluster_and_their_links_miss_nothing(
    new_flux: Any, uid: str
) -> None:
    bounds = {"FLUX_LIST_MAX_OFFSET": "5", "FLUX_LIST_AT_MAX_EVENTS": "10"}
    first = new_flux(4, **bounds)
    second = new_flux(join=first, **bounds)

    def both_serve() -> bool:
        ready = [node.client.get("/ready") for node in (first, second)]
        return all(r.status_code == 200 and r.json()["partitions"] for r in ready)

    first.wait_for(both_serve, timeout=90, what="partitions split over both nodes")
    ns = f"b{uid}"
    entities = [f"{ns}/{n:02d}" for n in range(12)]
    publish_all(first, [event(entity, T0 + i, v=i) for entity in entities for i in range(4)])
    publish_all(first, [event(f"{ns}/z{n:02d}", T0 + 50, v=0) for n in range(20)])  # not there yet at T0 + 9
    for node in (first, second):
        refused = node.client.get("/api/state/entities", params={"namespace": ns, "offset": "6"})
        assert refused.status_code == 422 and "FLUX_LIST_MAX_OFFSET" in refused.json()["error"], refused.text
        deepest = node.client.get("/api/state/entities", params={"namespace": ns, "offset": "5", "limit": "3"})
        assert [e["id"] for e in deepest.json()] == entities[5:8]
        at = pages_of(node, "/api/state/entities", {"namespace": ns, "at": str(T0 + 9), "limit": "100"})
        assert [entity for page in at for entity in page] == entities, at
        assert len(at) >= 3 and max(len(page) for page in at) <= 6, f"about 10 events a node and a page: {at}"
        then = node.client.get("/api/state/entities", params={"namespace": ns, "at": str(T0 + 9), "limit": "2"})
        assert [e["properties"] for e in then.json()] == [{"v": 3}, {"v": 3}]
        skipped = pages_of(node, "/api/state/entities", {"namespace": ns, "at": str(T0 + 9), "offset": "4"})
        assert [entity for page in skipped for entity in page] == entities[4:], skipped
