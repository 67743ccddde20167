"""A real node's log with FLUX_LOG_FORMAT=json and FLUX_ACCESS_LOG=true: every line one JSON object,
with an access line per request carrying the answer's request id."""

from __future__ import annotations

import orjson

from tests.conftest import NodeFactory


def test_a_json_logging_node_writes_only_json_lines_and_one_access_line_per_request(
    new_flux: NodeFactory, uid: str
) -> None:
    node = new_flux(FLUX_LOG_FORMAT="json", FLUX_ACCESS_LOG="true")
    published = node.publish(f"logs-{uid}", {"n": 1})
    assert published.status_code == 200
    missing = node.client.get(f"/api/state/entities/absent-{uid}", headers={"X-Request-ID": f"trace-{uid}"})
    assert missing.status_code == 404
    node.stop()
    lines = [line for line in (node.workdir / "flux.log").read_text().splitlines() if line.strip()]
    entries = [orjson.loads(line) for line in lines]  # fails on any line that is not JSON
    assert all({"time", "level", "logger", "message"} <= entry.keys() for entry in entries)
    access = [e for e in entries if e["logger"] == "uvicorn.access"]
    posted = [e for e in access if e["method"] == "POST" and e["path"] == "/api/events"]
    assert posted and posted[0]["status"] == 200 and posted[0]["request_id"] == published.headers["x-request-id"]
    read = [e for e in access if e["path"] == f"/api/state/entities/absent-{uid}"]
    assert read and read[0]["status"] == 404 and read[0]["request_id"] == f"trace-{uid}"
    assert any(e["logger"] == "flux.cli" and "serving on" in e["message"] for e in entries)
