"""The soak's cluster: local brokers and ``flux serve`` nodes it can ``kill -9`` and start again.

Brokers are a :class:`flux.localkafka.LocalKafkaCluster` on free ports under the run's directory;
nodes get the environments ``flux cluster`` gives its own (``api/cli/cluster.py``), on a free block
of ports, auth on with an admin token made for the run, each writing its output to ``node-N.log``.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from api.cli.cluster import node_environments, replication_factor
from flux.localkafka import LocalKafka, LocalKafkaCluster, free_port

READY_TIMEOUT_S = 240.0
STOP_TIMEOUT_S = 30.0


def process_tree(pid: int) -> list[int]:
    """``pid`` and every descendant of it that runs now (from ``/proc``)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo.extend(children.get(current, []))
    return tree


def rss_bytes(pids: list[int]) -> int:
    """The resident memory of ``pids`` together (``VmRSS``), skipping any that ended meanwhile."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
    return total


def process_label(pid: int) -> str:
    """What a process of a node is, from its command line: ``reducer``, ``http-<index>``, ``replay`` or its module."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return "gone"
    module = argv[argv.index("-m") + 1] if "-m" in argv[:-1] else Path(argv[0]).name
    if module == "api.cli":
        return "reducer"
    if module == "api.workers.process":
        index = next((a.split("=", 1)[1] for a in argv if a.startswith("--index=")), "?")
        return f"http-{index}"
    return "replay" if module == "agents.replay.worker" else module


def free_port_block(count: int) -> int:
    """The first of ``count`` consecutive free TCP ports on 127.0.0.1."""
    for _ in range(200):
        base = free_port()
        if base + count >= 65535:
            continue
        try:
            with contextlib.ExitStack() as stack:
                for port in range(base, base + count):
                    sock = stack.enter_context(socket.socket())
                    sock.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
    raise RuntimeError(f"no {count} consecutive free ports")


class SoakNode:
    """One ``flux serve`` process of the soak (a reducer process and its HTTP children)."""

    def __init__(self, name: str, env: dict[str, str], log_path: Path) -> None:
        self.name = name
        self.env = env
        self.url = env["FLUX_ADVERTISED_URL"]
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        """Spawn the node (its own session, output appended to its log)."""
        with self.log_path.open("ab") as log:
            log.write(f"\n===== soak: starting {self.name} at {time.strftime('%H:%M:%S')} =====\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "api.cli", "serve"],
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.starts += 1

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    def exit_code(self) -> int | None:
        """The exit code once the process ended, else None (also before the first start)."""
        return None if self.proc is None else self.proc.poll()

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def rss(self) -> int:
        """Resident memory of the node's process tree, bytes (0 when it does not run)."""
        return rss_bytes(process_tree(self.proc.pid)) if self.running() and self.proc is not None else 0

    def rss_by_process(self) -> dict[str, int]:
        """Resident memory of each process of the node, bytes, by :func:`process_label`."""
        if self.proc is None or not self.running():
            return {}
        found: dict[str, int] = {}
        for pid in process_tree(self.proc.pid):
            label = process_label(pid)
            found[label] = found.get(label, 0) + rss_bytes([pid])
        return found

    def kill(self) -> list[int]:
        """``kill -9`` of the reducer process; waits until it and its HTTP children are gone. Returns the pids."""
        if self.proc is None or not self.running():
            return []
        tree = process_tree(self.proc.pid)
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and any(Path(f"/proc/{pid}").exists() for pid in tree[1:]):
            time.sleep(0.1)
        return tree

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """SIGTERM, then SIGKILL past ``timeout``."""
        if self.proc is None or not self.running():
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def is_ready(self, client: httpx.Client) -> bool:
        """``/ready`` answers 200."""
        try:
            return self.running() and client.get(f"{self.url}/ready", timeout=2.0).status_code == 200
        except httpx.HTTPError:
            return False

    def partitions(self, client: httpx.Client) -> list[int] | None:
        """The partitions ``/ready`` says this node serves, or None when it is not ready."""
        try:
            answer = client.get(f"{self.url}/ready", timeout=2.0)
        except httpx.HTTPError:
            return None
        return list(answer.json().get("partitions", [])) if answer.status_code == 200 else None

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> float:
        """Seconds until ``/ready`` answered 200; RuntimeError if the node exits or takes longer."""
        started = time.monotonic()
        with httpx.Client() as client:
            while time.monotonic() - started < timeout:
                if not self.running():
                    raise RuntimeError(f"{self.name} exited with code {self.exit_code()}; see {self.log_path}")
                if self.is_ready(client):
                    return time.monotonic() - started
                time.sleep(0.25)
        raise RuntimeError(f"{self.name} not ready after {timeout:.0f} s; see {self.log_path}")


class SoakCluster:
    """``brokers`` local Kafka brokers and ``nodes`` Flux nodes of one app, all under ``work``."""

    def __init__(self, work: Path, nodes: int, brokers: int, partitions: int) -> None:
        self.work = work
        self.partitions = partitions
        self.admin_token = secrets.token_urlsafe(32)
        self.kafka = LocalKafkaCluster(
            work / "kafka", brokers, ports=[(free_port(), free_port()) for _ in range(brokers)]
        )
        self.bootstrap = self.kafka.bootstrap
        environ = {
            **os.environ,
            "FLUX_AUTH_ENABLED": "true",
            "FLUX_ADMIN_TOKEN": self.admin_token,
            "FLUX_PARTITIONS": str(partitions),
            "FLUX_APP_ID": f"soak{secrets.token_hex(3)}",
        }
        envs = node_environments(
            nodes,
            self.bootstrap,
            free_port_block(nodes),
            work / "nodes",
            replication_factor(brokers, os.environ),
            environ,
        )
        self.nodes = [SoakNode(name, env, work / f"{name}.log") for name, env in envs.items()]

    @property
    def brokers(self) -> list[LocalKafka]:
        return self.kafka.brokers

    def start(self) -> None:
        """Start the brokers, then the nodes side by side; return once every node is ready."""
        self.kafka.start(timeout=180)
        for node in self.nodes:
            node.start()
        for node in self.nodes:
            node.wait_ready()

    def served(self) -> bool:
        """Every node ready and every partition served by one of them."""
        with httpx.Client() as client:
            found = [node.partitions(client) for node in self.nodes]
        if any(partitions is None for partitions in found):
            return False
        together = sorted(p for partitions in found if partitions is not None for p in partitions)
        return together == list(range(self.partitions))

    def wait_served(self, timeout: float = READY_TIMEOUT_S) -> float:
        """Seconds until :meth:`served`; RuntimeError past ``timeout``."""
        started = time.monotonic()
        while not self.served():
            if time.monotonic() - started > timeout:
                raise RuntimeError(f"partitions not all served after {timeout:.0f} s")
            time.sleep(0.5)
        return time.monotonic() - started

    def memory(self) -> dict[str, int]:
        """RSS of each node's process tree, bytes."""
        return {node.name: node.rss() for node in self.nodes}

    def stop(self) -> None:
        """Stop the nodes (SIGTERM, side by side), then the brokers."""
        for node in self.nodes:
            if node.running() and node.proc is not None:
                node.proc.send_signal(signal.SIGTERM)
        for node in self.nodes:
            node.stop()
        self.kafka.stop()
