"""The ``flux`` command's client commands as real processes against real nodes: publish, get, ls and
history; ``tail`` following live changes over the WebSocket; an export imported into another node, and
imported again without applying anything twice; the one-line errors.

The same commands, every option and error, are proven in process in tests/api/test_cli.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import orjson

from flux.client import FluxClient
from tests.conftest import NodeFactory
from tests.flux_process import FluxProcess

T0 = 1_771_804_800_000  # 2026-02-23T00:00:00Z


def flux_cli(*args: str, input: bytes | None = None, url: str | None = None) -> subprocess.CompletedProcess[bytes]:
    env = {k: v for k, v in os.environ.items() if k not in ("FLUX_URL", "FLUX_TOKEN")}
    if url is not None:
        env["FLUX_URL"] = url
    return subprocess.run(
        [sys.executable, "-m", "api.cli", *args], input=input, capture_output=True, timeout=300, env=env
    )


def count(node: FluxProcess, prefix: str) -> int:
    listed = node.client.get("/api/state/entities", params={"prefix": prefix, "limit": "10000"})
    return len(listed.json())


def lines(run: subprocess.CompletedProcess[bytes]) -> list[dict]:
    assert run.returncode == 0, run.stderr.decode()
    return [orjson.loads(line) for line in run.stdout.splitlines()]


def test_publish_get_ls_and_history_on_a_real_node(flux: FluxProcess, uid: str) -> None:
    published = flux_cli("publish", f"c{uid}/s-1", "temp=21.5", "unit=celsius", "--wait", "--url", flux.url)
    assert published.returncode == 0, published.stderr
    flux_cli("publish", f"c{uid}/s-1", "temp=22", "--timestamp", str(T0), "--wait", url=flux.url)  # older: loses
    [entity] = lines(flux_cli("get", f"c{uid}/s-1", url=flux.url))
    assert entity["properties"] == {"temp": 21.5, "unit": "celsius"}
    events = "\n".join(
        orjson.dumps({"payload": {"entity_id": f"c{uid}/s-{i}", "properties": {"i": i}}}).decode() for i in range(2, 6)
    )
    assert flux_cli("publish", "--wait", input=events.encode(), url=flux.url).returncode == 0
    assert [e["id"] for e in lines(flux_cli("ls", "--prefix", f"c{uid}/", url=flux.url))] == [
        f"c{uid}/s-{i}" for i in range(1, 6)
    ]
    history = lines(flux_cli("history", f"c{uid}/s-1", "--since", "0", url=flux.url))
    assert [e["payload"]["properties"]["temp"] for e in history] == [22, 21.5]  # oldest first


def test_tail_prints_live_changes_as_json_lines(flux: FluxProcess, uid: str, tmp_path: Path) -> None:
    out, err = tmp_path / "tail.out", tmp_path / "tail.err"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        tail = subprocess.Popen(
            [sys.executable, "-m", "api.cli", "tail", f"t{uid}/*", "--json", "--count", "3", "--url", flux.url],
            stdout=stdout,
            stderr=stderr,
        )
    try:
        deadline = time.monotonic() + 60
        while b"subscribed" not in err.read_bytes():
            assert tail.poll() is None and time.monotonic() < deadline, err.read_text()
            time.sleep(0.1)
        flux_cli("publish", f"t{uid}/a", "v=1", "w=x", "--url", flux.url)
        flux_cli("publish", f"t{uid}/b", "v=2", "--url", flux.url)
        assert tail.wait(timeout=60) == 0, err.read_text()
    finally:
        if tail.poll() is None:
            tail.kill()
    changes = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    assert {(c["type"], c["entity_id"], c["property"], c["value"]) for c in changes} == {
        ("state_update", f"t{uid}/a", "v", 1),
        ("state_update", f"t{uid}/a", "w", "x"),
        ("state_update", f"t{uid}/b", "v", 2),
    }


def test_export_import_round_trip_and_a_reimport_applies_nothing_twice(
    flux: FluxProcess, new_flux: NodeFactory, uid: str, tmp_path: Path
) -> None:
    prefix = f"x{uid}/"
    events = "\n".join(
        orjson.dumps(
            {
                "timestamp": T0 + i,
                "payload": {"entity_id": f"{prefix}{i:05d}", "properties": {"i": i, "odd": i % 2 == 1}},
            }
        ).decode()
        for i in range(3000)
    )
    assert flux_cli("publish", input=events.encode(), url=flux.url).returncode == 0
    flux.wait_for(lambda: count(flux, prefix) == 3000, timeout=120, what="3,000 entities")
    dump = tmp_path / "state.ndjson"
    exported = flux_cli("export", "--prefix", prefix, "--page-size", "1000", "-o", str(dump), url=flux.url)
    assert exported.returncode == 0, exported.stderr
    assert b"exported 3,000 entities" in exported.stderr
    state = [orjson.loads(line) for line in dump.read_bytes().splitlines()]
    assert [e["id"] for e in state] == [f"{prefix}{i:05d}" for i in range(3000)]

    target = new_flux(2)
    first = flux_cli("import", str(dump), "--batch-size", "700", url=target.url)
    assert first.returncode == 0 and b"imported 3,000 entities, rejected 0" in first.stderr, first.stderr
    target.wait_for(lambda: count(target, prefix) == 3000, timeout=120, what="3,000 imported entities")
    target.wait_for(lambda: target.entity(f"{prefix}02999").status_code == 200, timeout=60, what="the last one")
    assert lines(flux_cli("ls", "--prefix", prefix, "--limit", "0", url=target.url)) == state

    again = flux_cli("import", str(dump), "--batch-size", "700", url=target.url)
    assert again.returncode == 0, again.stderr
    rebatched = flux_cli("import", str(dump), "--batch-size", "1000", "--wait", url=target.url)  # other keys
    assert rebatched.returncode == 0 or b"WaitTimeout" in rebatched.stderr, rebatched.stderr
    time.sleep(2)  # (a re-import changes nothing: there is nothing to wait for)
    assert lines(flux_cli("ls", "--prefix", prefix, "--limit", "0", url=target.url)) == state
    stored = lines(flux_cli("history", "--since", "0", "--limit", "0", f"{prefix}00042", url=target.url))
    assert len(stored) == 1 and stored[0]["eventId"].startswith("import-")
    with FluxClient(target.url) as client:  # one stored event per entity after three imports
        assert sum(1 for _ in client.history(prefix=prefix, since=0, page_size=1000)) == 3000


def test_errors_are_one_line_and_exit_non_zero(flux: FluxProcess, uid: str) -> None:
    refused = flux_cli("get", "x", "--url", "http://127.0.0.1:1")
    assert refused.returncode == 1
    assert refused.stderr.decode() == "flux: cannot reach Flux at http://127.0.0.1:1: connection refused\n"
    bad = flux_cli("get", "x", "--at", "not-a-time", url=flux.url)
    assert bad.returncode == 1 and bad.stderr.decode().startswith("flux: 4") and bad.stderr.count(b"\n") == 1
    missing = flux_cli("get", f"none-{uid}", url=flux.url)
    assert missing.returncode == 1 and missing.stderr.decode() == f"flux: no entity 'none-{uid}'\n"
