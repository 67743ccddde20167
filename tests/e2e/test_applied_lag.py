"""A running node's applied lag and latency in ``/metrics``: every folded event is counted in the
latency histogram, and once everything is folded every served partition shows no lag (the
transaction markers of batch writes included)."""

from __future__ import annotations

from typing import Any


def values(flux: Any) -> dict[str, float]:
    text = flux.client.get("/metrics").text
    return {
        name: float(value) for name, value in (line.rsplit(" ", 1) for line in text.splitlines() if line[:1] != "#")
    }


def test_folded_events_are_counted_in_the_latency_histogram_and_leave_no_lag(flux, uid):
    before = values(flux)["flux_applied_latency_ms_count"]
    singles = 12
    for i in range(singles):
        assert flux.publish(f"lag-{uid}/{i % 5}", {"n": i}).status_code == 200
    batch = [
        {"stream": "test", "source": "pytest", "payload": {"entity_id": f"lag-{uid}/b{i}", "properties": {"n": i}}}
        for i in range(8)
    ]
    response = flux.client.post("/api/events/batch", json=batch)  # a transaction: markers follow its records
    assert response.status_code == 200, response.text
    flux.wait_entity(f"lag-{uid}/b7", lambda e: True)
    flux.wait_entity(f"lag-{uid}/{(singles - 1) % 5}", lambda e: e["properties"]["n"] == singles - 1)

    def settled() -> dict[str, float] | None:
        now = values(flux)
        lag = {name: value for name, value in now.items() if name.startswith("flux_applied_lag_")}
        served = {f'flux_applied_lag_records{{partition="{p}"}}' for p in range(4)}
        if (
            now["flux_applied_latency_ms_count"] - before == singles + 8
            and served <= set(lag)
            and not any(lag.values())
        ):
            return now
        return None

    now = flux.wait_for(settled, timeout=20, what="all events counted and no lag on any partition")
    assert now['flux_applied_latency_ms_bucket{le="+Inf"}'] == now["flux_applied_latency_ms_count"]
    assert now['flux_applied_latency_ms_bucket{le="10000"}'] == now["flux_applied_latency_ms_count"], (
        "seconds, not hours"
    )
    assert all(now[f'flux_applied_lag_ms{{partition="{p}"}}'] == 0 for p in range(4))
