"""``flux backfill``: reading files, stable eventIds, checkpoints (unit), and runs against a real node (e2e)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import orjson

from tests.conftest import NodeFactory
from tests.unit.test_backfill_file import T0, event


def run_backfill(path: Path, url: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "api.cli", "backfill", str(path), "--url", url, "--batch-size", "250", *extra],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ},
    )


def test_a_backfill_publishes_a_file_resumes_without_duplicates_and_reports_rejects(
    new_flux: NodeFactory, tmp_path: Path, uid: str
) -> None:
    node = new_flux(2)
    ns = f"b{uid}"
    path = tmp_path / "archive.jsonl"
    lines = [orjson.dumps(event(i, ns)).decode() for i in range(1000)]
    lines[10] = '{"stream": "backfill", "payload": {"entity_id": "x"}}'  # no source, no properties
    lines[20] = "not json at all"
    path.write_text("\n".join(lines) + "\n")

    done = run_backfill(path, node.url)
    assert done.returncode == 3, done.stdout + done.stderr  # 3: some events were rejected
    assert "accepted 998, rejected 2, skipped 0" in done.stdout
    assert "backfill:" in done.stderr and "events/s" in done.stderr
    rejects = [orjson.loads(line) for line in (tmp_path / "archive.jsonl.rejects.jsonl").read_text().splitlines()]
    assert sorted(r["index"] for r in rejects) == [10, 20]
    assert any("source is required" in r["error"] for r in rejects)

    with path.open("a") as more:  # the file grows; a new run sends only the new part
        more.write("\n".join(orjson.dumps(event(i, ns)).decode() for i in range(1000, 1500)) + "\n")
    resumed = run_backfill(path, node.url)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "accepted 500, rejected 0, skipped 1,000" in resumed.stdout

    again = run_backfill(path, node.url, "--restart")  # everything again: applied once all the same
    assert "accepted 1,498" in again.stdout

    def history_count() -> int:
        total, cursor_params = 0, {"namespace": ns, "since": "0", "limit": "1000"}
        response = node.client.get("/api/events", params=cursor_params)
        while True:
            total += len(response.json())
            link = response.headers.get("link")
            if link is None:
                return total
            response = node.client.get(link[1 : link.index(">")])

    node.wait_for(lambda: history_count() == 1498, what="1,498 events in history, each once")
    assert node.entity(f"{ns}/dev-19").json()["properties"] == {"reading": 1499}
    assert node.client.get(f"/api/state/entities/{ns}/dev-19", params={"at": str(T0 + 19_000)}).json()[
        "properties"
    ] == {"reading": 19}


def test_50k_historic_events_backfilled_while_live_events_arrive_merge_by_time(
    new_flux: NodeFactory, tmp_path: Path, uid: str
) -> None:
    node = new_flux(4)
    ns = f"i{uid}"
    entities = 500
    path = tmp_path / "history.jsonl"
    # historic: old timestamps; each entity's "level" and its own "old" reading
    historic = [
        {
            "stream": "archive",
            "source": "backfill",
            "timestamp": T0 + i,
            "payload": {"entity_id": f"{ns}/dev-{i % entities}", "properties": {"level": -i, "old": i}},
        }
        for i in range(50_000)
    ]
    path.write_text("\n".join(orjson.dumps(e).decode() for e in historic) + "\n")
    live_sent: list[int] = []
    stop = threading.Event()

    def live() -> None:
        now = int(time.time() * 1000)
        with httpx.Client(base_url=node.url, timeout=30) as client:
            k = 0
            while not stop.is_set():
                batch = [
                    {
                        "stream": "live",
                        "source": "sensor",
                        "timestamp": now + k + j,
                        "payload": {"entity_id": f"{ns}/dev-{(k + j) % entities}", "properties": {"level": k + j}},
                    }
                    for j in range(100)
                ]
                assert client.post("/api/events/batch", json=batch).status_code == 200
                live_sent.extend(range(k, k + 100))
                k += 100

    writer = threading.Thread(target=live)
    writer.start()
    try:
        done = run_backfill(path, node.url, "--batch-size", "1000")
    finally:
        stop.set()
        writer.join()

    assert done.returncode == 0, done.stdout + done.stderr
    assert "accepted 50,000, rejected 0" in done.stdout
    assert len(live_sent) >= 1000, "live events flowed during the backfill"
    newest_live = {f"{ns}/dev-{i % entities}": i for i in live_sent}
    newest_old = {f"{ns}/dev-{i % entities}": i for i in range(50_000)}

    def merged() -> bool:
        found = node.client.get("/api/state/entities", params={"namespace": ns, "limit": 10_000}).json()
        return len(found) == entities and all(
            e["properties"] == {"level": newest_live.get(e["id"], -newest_old[e["id"]]), "old": newest_old[e["id"]]}
            for e in found
        )

    node.wait_for(merged, timeout=60, what="live values kept, historic values merged")
    one = f"{ns}/dev-7"
    history, response = [], node.client.get("/api/events", params={"entity": one, "since": "0", "limit": 1000})
    while True:
        history += response.json()
        link = response.headers.get("link")
        if link is None:
            break
        response = node.client.get(link[1 : link.index(">")])
    expected = 50_000 // entities + sum(1 for i in live_sent if i % entities == 7)
    assert len(history) == expected
    assert [e["timestamp"] for e in history] == sorted(e["timestamp"] for e in history)
    at_past = node.client.get(f"/api/state/entities/{one}", params={"at": str(T0 + 10_000)}).json()
    last = max(i for i in range(10_001) if i % entities == 7)  # no live event is that old
    assert at_past["properties"] == {"level": -last, "old": last}
