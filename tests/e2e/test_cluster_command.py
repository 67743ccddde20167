"""``flux cluster``: each node's settings, and a run of real nodes stopped by Ctrl-C without leaving any behind."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest

# --- no broker needed ----------------------------------------------------------------------------------------------


# --- real nodes ----------------------------------------------------------------------------------------------------


def _two_free_ports() -> int:
    """A port P such that P and P+1 are both free right now."""
    for _ in range(50):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise RuntimeError("no two consecutive free ports")


def _children(pid: int) -> set[int]:
    """Pids of the direct children of ``pid`` (Linux)."""
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return {int(p) for p in path.read_text().split()} if path.exists() else set()


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] not in ("Z", "X")


def test_flux_cluster_runs_nodes_of_one_app_and_ctrl_c_stops_them_all(kafka_bootstrap: str, tmp_path: Path) -> None:
    if not Path("/proc/self/task").exists():
        pytest.skip("reads child processes from /proc")
    app = f"cc{uuid.uuid4().hex[:8]}"
    port = _two_free_ports()
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,  # the session's broker: the command starts none
        "FLUX_APP_ID": app,
        "FLUX_EVENTS_TOPIC": f"{app}.events",
        "FLUX_DEAD_LETTER_TOPIC": f"{app}.events.dlq",
        "FLUX_CHANGES_TOPIC": f"{app}.changes",
        "FLUX_NAMESPACES_TOPIC": f"{app}.namespaces",
        "FLUX_IDEMPOTENCY_TOPIC": f"{app}.idempotency",
        "FLUX_WEBHOOKS_TOPIC": f"{app}.webhooks",
        "FLUX_PARTITIONS": "4",
        "FLUX_REPLICATION_FACTOR": "1",
    }
    output = tmp_path / "cluster.out"
    args = ["cluster", "--nodes", "2", "--port", str(port), "--data-dir", str(tmp_path / "nodes")]
    with output.open("wb") as out:
        command = subprocess.Popen(
            [sys.executable, "-m", "api.cli", *args],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 120
        while "all 2 nodes ready" not in output.read_text():
            assert command.poll() is None, output.read_text()
            assert time.monotonic() < deadline, output.read_text()
            time.sleep(0.5)
        nodes = _children(command.pid)
        assert len(nodes) == 2, nodes

        first, second = (httpx.Client(base_url=f"http://127.0.0.1:{p}", timeout=30) for p in (port, port + 1))
        body = {"stream": "s", "source": "t", "payload": {"entity_id": "cc-1", "properties": {"v": 1}}}
        assert first.post("/api/events", params={"wait": "true"}, json=body).status_code == 200
        assert second.get("/api/state/entities/cc-1").json()["properties"] == {"v": 1}

        command.send_signal(signal.SIGINT)
        assert command.wait(60) == 0
    finally:
        if command.poll() is None:
            command.kill()
    text = output.read_text()
    assert re.search(r"^node-1 \| ", text, re.M) and re.search(r"^node-2 \| ", text, re.M), "prefixed output"
    assert "node-1 exited with code 0" in text and "node-2 exited with code 0" in text, text
    assert not [pid for pid in nodes if _alive(pid)], "no node outlives the command"
