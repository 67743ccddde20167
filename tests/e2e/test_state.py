"""A running node on a real broker: ready on every partition, and its metrics count what its reducer applied.

Reads, their parameters and pages, the operations endpoints' shapes and the OpenAPI document are proven in
process: tests/api/test_state_reads.py, test_operations.py and test_openapi.py.
"""

from __future__ import annotations


def test_a_running_node_is_ready_on_every_partition_and_counts_what_its_reducer_applied(flux, uid):
    ready = flux.client.get("/ready").json()
    assert ready["status"] == "ready" and ready["broker"] and ready["recovered"]
    assert ready["partitions"] == [0, 1, 2, 3]
    assert ready["standbys"] == {}, "one node: nobody to copy"
    flux.publish(f"metrics-{uid}", {"x": 1})
    flux.wait_entity(f"metrics-{uid}", lambda e: True)
    text = flux.client.get("/metrics").text
    values = dict(line.split(" ") for line in text.splitlines() if line and not line.startswith("#"))
    assert float(values["flux_events_applied_total"]) >= 1 and float(values["flux_entities"]) >= 1
