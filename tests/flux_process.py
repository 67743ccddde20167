"""A real ``flux serve`` process for e2e tests: start, wait until ready, stop, kill, restart."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from flux.config import Settings


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def app_settings(bootstrap: str, app_id: str, partitions: int = 4, replication_factor: int = 1) -> Settings:
    """Settings of an app under test whose topics are named after it, as :class:`FluxProcess` names them."""
    return Settings(
        kafka_bootstrap_servers=bootstrap,
        app_id=app_id,
        events_topic=f"{app_id}.events",
        changes_topic=f"{app_id}.changes",
        namespaces_topic=f"{app_id}.namespaces",
        idempotency_topic=f"{app_id}.idempotency",
        webhooks_topic=f"{app_id}.webhooks",
        dead_letter_topic=f"{app_id}.events.dlq",
        partitions=partitions,
        replication_factor=replication_factor,
    )


class FluxProcess:
    """One Flux node run as a subprocess, with its own app id, topics and data dir."""

    def __init__(
        self, bootstrap: str, workdir: Path, port: int, app_id: str, partitions: int, env: dict[str, str]
    ) -> None:
        self.bootstrap = bootstrap
        self.workdir = workdir
        self.port = port
        self.app_id = app_id
        self.partitions = partitions
        self.events_topic = f"{app_id}.events"
        self.dead_letter_topic = f"{app_id}.events.dlq"
        self.changes_topic = f"{app_id}.changes"
        self.namespaces_topic = f"{app_id}.namespaces"
        self.idempotency_topic = f"{app_id}.idempotency"
        self.webhooks_topic = f"{app_id}.webhooks"
        self.extra_env = env
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = f"http://127.0.0.1:{port}"
        self.client = httpx.Client(base_url=self.url, timeout=30)

    def env(self) -> dict[str, str]:
        """The environment the node runs with."""
        env = dict(os.environ)
        env.update(
            KAFKA_BOOTSTRAP_SERVERS=self.bootstrap,
            FLUX_PORT=str(self.port),
            FLUX_APP_ID=self.app_id,
            FLUX_EVENTS_TOPIC=self.events_topic,
            FLUX_DEAD_LETTER_TOPIC=self.dead_letter_topic,
            FLUX_CHANGES_TOPIC=self.changes_topic,
            FLUX_NAMESPACES_TOPIC=self.namespaces_topic,
            FLUX_IDEMPOTENCY_TOPIC=self.idempotency_topic,
            FLUX_WEBHOOKS_TOPIC=self.webhooks_topic,
            FLUX_PARTITIONS=str(self.partitions),
            FLUX_DATA_DIR=str(self.workdir / "data"),
            FLUX_LOG_LEVEL="WARNING",
            FLUX_FAUST_LOG_LEVEL="INFO",  # rebalances and recovery in flux.log, for failure messages
        )
        env.update(self.extra_env)
        return env

    def start(self, timeout: float = 90.0) -> None:
        """Start the node and wait until ``/ready`` answers 200."""
        self.launch()
        self.wait_ready(timeout)

    def launch(self) -> None:
        """Start the node's process (not waiting for anything)."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = open(self.workdir / "flux.log", "ab")  # noqa: SIM115 - kept open for the process's life
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "api.cli", "serve"],
            env=self.env(),
            cwd=self.workdir,
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    def wait_ready(self, timeout: float = 90.0) -> None:
        """Poll ``/ready`` until 200; fail with the node's log if it dies or times out."""
        if not self.wait_ready_or_exit(timeout):
            assert self.proc is not None
            raise RuntimeError(f"flux exited with {self.proc.returncode}:\n{self.log_tail()}")

    def wait_ready_or_exit(self, timeout: float = 90.0) -> bool:
        """Poll ``/ready`` until 200 (True) or the process exits (False); fail with the log on a time-out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                return False
            try:
                if self.client.get("/ready", timeout=2).status_code == 200:
                    return True
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"flux not ready after {timeout}s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 60) -> str:
        """The end of the node's log, for failure messages, after its CRITICAL lines from anywhere in it
        (why a worker crashed, which a flood of later lines would push out of the tail)."""
        path = self.workdir / "flux.log"
        if not path.exists():
            return ""
        text = path.read_text(errors="replace").splitlines()
        critical = [line for line in text[:-lines] if "[CRITICAL]" in line or '"level":"CRITICAL"' in line]
        head = ["critical lines earlier in the log:", *critical, "the log's end:"] if critical else []
        return "\n".join([*head, *text[-lines:]])

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM and wait (SIGKILL past ``timeout``)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def kill(self) -> None:
        """SIGKILL at once, as a crash would."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    # -- HTTP helpers -----------------------------------------------------------------
    def publish(self, entity_id: str, properties: dict[str, Any], **fields: Any) -> httpx.Response:
        """POST one event."""
        body = {"stream": "test", "source": "pytest", "payload": {"entity_id": entity_id, "properties": properties}}
        body.update(fields)
        return self.client.post("/api/events", json=body)

    def entity(self, entity_id: str) -> httpx.Response:
        """GET one entity."""
        return self.client.get(f"/api/state/entities/{entity_id}")

    def wait_for(self, probe: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> Any:
        """Poll ``probe`` until it returns something truthy."""
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            last = probe()
            if last:
                return last
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what}; last probe: {last!r}")

    def wait_entity(self, entity_id: str, predicate: Callable[[dict[str, Any]], bool], timeout: float = 30.0) -> Any:
        """Poll the entity until ``predicate(entity)`` holds; returns the entity."""

        def probe() -> Any:
            response = self.entity(entity_id)
            if response.status_code == 200 and predicate(response.json()):
                return response.json()
            return None

        return self.wait_for(probe, timeout, f"entity {entity_id}")


def served_partitions(nodes: list[FluxProcess]) -> dict[str, list[int]] | None:
    """The partitions each node serves, by URL, if every node answers ``/ready`` with 200 (else None)."""
    found = {}
    for node in nodes:
        try:
            ready = node.client.get("/ready", timeout=5)
        except httpx.HTTPError:
            return None
        if ready.status_code != 200:
            return None
        found[node.url] = ready.json()["partitions"]
    return found
