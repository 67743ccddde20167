"""The Grafana dashboard (docs/grafana/flux-dashboard.json) reads only metrics Flux exports; the e2e
tier checks the same against a running node (tests/e2e/test_dashboard.py)."""

from __future__ import annotations

from flux.metrics import Metrics
from flux.prometheus import exposition
from tests.promql import dashboard_queries, exported_names, metric_names


def test_metric_names_are_read_out_of_promql() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (le, route) (rate(flux_x_ms_bucket{instance=~"$instance"}'
        "[$__rate_interval]))) / on (job) group_left sum without (a) (up) + label_values(flux_y_total, instance)"
    )
    assert metric_names(expr) == {"flux_x_ms_bucket", "up", "flux_y_total"}


def test_every_dashboard_query_names_a_metric_the_collector_exports() -> None:
    body, _ = exposition(Metrics(), 0, None)
    exported = exported_names(body.decode())
    queries = dashboard_queries()
    assert len(queries) >= 20
    for query in queries:
        names = metric_names(query)
        assert names, query
        assert names <= exported, f"{query}: {names - exported} not exported"
