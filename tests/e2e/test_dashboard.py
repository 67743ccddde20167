"""The Grafana dashboard (docs/grafana/flux-dashboard.json) against a running node: every metric its
queries read is in the node's ``/metrics``, and the HTTP processes' figures reach it."""

from __future__ import annotations

from typing import Any

from tests.promql import dashboard_queries, exported_names, metric_names


def samples(flux: Any) -> dict[str, float]:
    text = flux.client.get("/metrics").text
    lines = (line.rsplit(" ", 1) for line in text.splitlines() if line and not line.startswith("#"))
    return {name: float(value) for name, value in lines}


def test_every_dashboard_query_reads_metrics_the_node_exports(flux, uid):
    assert flux.publish(f"dash-{uid}", {"x": 1}).status_code == 200
    flux.wait_entity(f"dash-{uid}", lambda e: True)

    def reported() -> dict[str, float] | None:
        now = samples(flux)
        synced = now.get("flux_publish_latency_ms_count", 0) >= 1 and now.get("flux_relay_latency_ms_count", 0) >= 1
        return now if synced else None

    now = flux.wait_for(reported, timeout=20, what="the HTTP processes' histograms in /metrics")
    assert any(name.startswith('flux_http_request_duration_ms_count{method="POST",route="/api/events"') for name in now)
    assert any(name.startswith("flux_http_process_resident_memory_bytes{") and v > 0 for name, v in now.items())
    assert any(name.startswith("flux_relay_lag_records{") for name in now)
    assert now["process_resident_memory_bytes"] > 0, "the reducer process's own process metrics"

    exported = exported_names(flux.client.get("/metrics").text)
    missing = {query: metric_names(query) - exported for query in dashboard_queries()}
    assert not {query: names for query, names in missing.items() if names}
