"""``/metrics`` through prometheus_client: the collector's families (names, types, labels) in both
formats, the HTTP processes' counters and histograms added up, and totals that never go backwards
when an HTTP process is replaced."""

from __future__ import annotations

import os

import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics_families
from prometheus_client.parser import text_string_to_metric_families

from flux.metrics import PUBLISH, RELAYED, REQUEST, AppliedLag, Histogram, Metrics, WorkerCounters
from flux.model.changes import ChangeRecord, decode_record, encode_records
from flux.prometheus import exposition, prometheus_text

EXPECTED = {  # every family Flux exports, with its type
    "flux_events_published": "counter",
    "flux_events_applied": "counter",
    "flux_events_rejected": "counter",
    "flux_events_duplicate": "counter",
    "flux_source_records": "counter",
    "flux_partition_stalls": "counter",
    "flux_fenced_batches": "counter",
    "flux_entities": "gauge",
    "flux_publishers_active": "gauge",
    "flux_websocket_connections": "gauge",
    "flux_websocket_dropped": "counter",
    "flux_applied_latency_ms": "histogram",
    "flux_applied_lag_records": "gauge",
    "flux_applied_lag_ms": "gauge",
    "flux_standby_lag_records": "gauge",
    "flux_relay_lag_records": "gauge",
    "flux_publish_latency_ms": "histogram",
    "flux_relay_latency_ms": "histogram",
    "flux_http_request_duration_ms": "histogram",
    "flux_http_process_resident_memory_bytes": "gauge",
    "flux_http_process_cpu_seconds": "counter",
}


def samples(text: str) -> dict[str, float]:
    """Name with labels -> value, of the sample lines of a Prometheus text."""
    lines = (line.rsplit(" ", 1) for line in text.splitlines() if line and not line.startswith("#"))
    return {name: float(value) for name, value in lines}


def a_busy_node() -> Metrics:
    metrics = Metrics()
    metrics.published(3, ["a"])
    metrics.applied(5)
    metrics.lag({1: AppliedLag(4, 20.0)})
    metrics.standby_lag = {2: 7}
    metrics.observe((REQUEST, "/api/state/entities/{entity_id:path}", "GET", "200"), 3)
    worker = Metrics()
    worker.observe(PUBLISH, 12)
    worker.observe((REQUEST, "/api/events", "POST", "200"), 12)
    metrics.report(0, WorkerCounters(published=2, relay_lag_records=6, rss_bytes=1 << 20, cpu_seconds=2.5))
    metrics.report(1, WorkerCounters.from_json(WorkerCounters(histograms=worker.series).to_json()))
    return metrics


def test_every_family_has_its_name_and_type_in_the_text_format() -> None:
    families = {f.name: f for f in text_string_to_metric_families(prometheus_text(a_busy_node(), 9))}
    assert {name: families[name].type for name in EXPECTED} == EXPECTED
    values = samples(prometheus_text(a_busy_node(), 9))
    assert values["flux_events_published_total"] == 5 and values["flux_entities"] == 9
    assert values['flux_standby_lag_records{partition="2"}'] == 7
    assert values['flux_applied_lag_records{partition="1"}'] == 4
    assert values['flux_relay_lag_records{process="http-0"}'] == 6
    assert values['flux_http_process_resident_memory_bytes{process="http-0"}'] == 1 << 20
    assert values['flux_http_process_cpu_seconds_total{process="http-1"}'] == 0
    assert values['flux_publish_latency_ms_bucket{le="25"}'] == 1 and values["flux_publish_latency_ms_count"] == 1
    assert values['flux_http_request_duration_ms_count{method="POST",route="/api/events",status="200"}'] == 1
    route = "/api/state/entities/{entity_id:path}"
    assert values[f'flux_http_request_duration_ms_bucket{{le="5",method="GET",route="{route}",status="200"}}'] == 1


def test_openmetrics_is_valid_and_has_the_same_families_and_the_process_metrics() -> None:
    body, content_type = exposition(a_busy_node(), 9, "application/openmetrics-text; version=1.0.0")
    assert content_type.startswith("application/openmetrics-text; version=1.0.0")
    text = body.decode()
    assert text.endswith("# EOF\n")
    families = {f.name: f.type for f in openmetrics_families(text)}  # the parser refuses invalid OpenMetrics
    assert {name: families[name] for name in EXPECTED} == EXPECTED
    assert families["python_gc_collections"] == "counter"
    if os.path.exists("/proc/self/stat"):  # prometheus_client's process metrics read /proc (Linux)
        assert families["process_cpu_seconds"] == "counter" and families["process_resident_memory_bytes"] == "gauge"


def test_a_scrape_without_openmetrics_in_accept_gets_the_text_format() -> None:
    for accept in (None, "", "text/plain", "*/*", "text/plain;version=0.0.4;q=0.5,*/*;q=0.1"):
        body, content_type = exposition(Metrics(), 0, accept)
        assert content_type == "text/plain; version=0.0.4; charset=utf-8"
        assert b"# TYPE flux_events_published_total counter\n" in body and b"# EOF" not in body


def test_histograms_of_the_http_processes_add_up_and_a_sync_may_carry_only_the_changed_series() -> None:
    metrics = Metrics()
    worker = Metrics()
    worker.observe(PUBLISH, 3)
    worker.observe(RELAYED, 40)
    metrics.report(0, WorkerCounters.from_json(worker.counters().to_json()))
    worker.observe(PUBLISH, 300)
    metrics.report(0, WorkerCounters.from_json(worker.counters().to_json([PUBLISH])))  # the relay's did not change
    metrics.observe(PUBLISH, 1)  # this process serves HTTP too (FLUX_HTTP_PROCESSES=0)
    values = samples(prometheus_text(metrics, 0))
    assert values["flux_publish_latency_ms_count"] == 3 and values["flux_publish_latency_ms_sum"] == 304
    assert values['flux_publish_latency_ms_bucket{le="5"}'] == 2
    assert values["flux_relay_latency_ms_count"] == 1


def test_an_http_process_replaced_leaves_its_counts_in_the_totals_and_its_gauges_go() -> None:
    metrics = Metrics()
    old = Metrics()
    old.observe(PUBLISH, 3)
    old.published(4, ["a"])
    old.websocket_connections = 2
    metrics.report(0, WorkerCounters.from_json(old.counters().to_json()))
    metrics.retire(0)
    new = Metrics()
    new.observe(PUBLISH, 5)
    new.published(1, ["b"])
    metrics.report(0, WorkerCounters.from_json(new.counters().to_json()))
    values = samples(prometheus_text(metrics, 0))
    assert values["flux_events_published_total"] == 5 and values["flux_publish_latency_ms_count"] == 2
    assert values["flux_websocket_connections"] == 0
    metrics.retire(0)
    metrics.retire(0)  # twice: nothing more to keep
    values = samples(prometheus_text(metrics, 0))
    assert values["flux_events_published_total"] == 5 and values["flux_publish_latency_ms_count"] == 2
    assert not any("http-0" in name for name in values)


def test_worker_counters_survive_their_wire_form_and_refuse_malformed_histograms() -> None:
    histogram = Histogram()
    histogram.observe(7, weight=3)
    counters = WorkerCounters(1, 2, 3, 4, 5, 6, 7.5, {(REQUEST, "/x", "GET", "200"): histogram})
    back = WorkerCounters.from_json(counters.to_json())
    assert back == counters and back.histograms[(REQUEST, "/x", "GET", "200")].buckets == histogram.buckets
    bad = counters.to_json()
    bad["histograms"] += [[["publish"], [[1, 2], 3]], [[], [histogram.buckets, 1]], "x", [[1], [[0], 0]]]
    assert WorkerCounters.from_json(bad).histograms.keys() == {(REQUEST, "/x", "GET", "200")}


def test_request_series_are_bounded() -> None:
    metrics = Metrics()
    for i in range(1_000):
        metrics.observe((REQUEST, f"/r{i}", "GET", "200"), 1)
    assert len(metrics.series) <= 301
    assert metrics.series[(REQUEST, "other", "other", "other")].count == 1_000 - 300


@pytest.mark.parametrize("source_ms", [0, 1_000])
def test_a_relayed_change_counts_the_time_since_its_newest_event_was_sent(source_ms: int) -> None:
    record = decode_record(encode_records(ChangeRecord(0, 1, 1, 1, source_ms=source_ms))[0])
    assert record.source_ms == source_ms
    metrics = Metrics()
    metrics.relayed(record, now_ms=1_250)
    relayed = metrics.series.get(RELAYED)
    if source_ms:
        assert relayed is not None and relayed.count == 1 and relayed.sum == 250
    else:
        assert relayed is None  # a record of an older reducer, without the timestamp: not counted
