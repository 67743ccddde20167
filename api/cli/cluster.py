"""``flux cluster``: a local Kafka cluster and several Flux nodes of one app, in the foreground.

Unless ``KAFKA_BOOTSTRAP_SERVERS`` is set, it starts a :class:`flux.localkafka.LocalKafkaCluster`
(three brokers by default), then ``--nodes`` ``flux serve`` processes on ports 3000, 3001, ... with
the same ``FLUX_APP_ID``, each with its own ``FLUX_DATA_DIR`` and ``FLUX_ADVERTISED_URL``, and
``FLUX_REPLICATION_FACTOR`` up to 3. Their output is printed line by line, prefixed with the node's
name. Ctrl-C (SIGINT) or SIGTERM stops the nodes first, then the brokers this command started (a
cluster that already ran is left running); a second signal hurries both along with SIGKILL.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import FrameType
from typing import IO

import httpx

from flux.localkafka import LocalKafkaCluster, LocalKafkaError, cluster_ports

Say = Callable[[str], None]

DEFAULT_NODES = 3
DEFAULT_DATA_DIR = Path(".flux/cluster")
MAX_REPLICATION_FACTOR = 3
MAX_RESTARTS = 5  # of one node that stops itself with an error
NODE_STOP_TIMEOUT_S = 30.0  # a node exits by FLUX_SHUTDOWN_TIMEOUT_S (20 s) even when the broker is gone


def replication_factor(brokers: int | None, environ: Mapping[str, str]) -> str:
    """``FLUX_REPLICATION_FACTOR`` for the nodes: as set, else min(3, local brokers), else 3 (external Kafka)."""
    if environ.get("FLUX_REPLICATION_FACTOR"):
        return environ["FLUX_REPLICATION_FACTOR"]
    return str(min(MAX_REPLICATION_FACTOR, brokers) if brokers else MAX_REPLICATION_FACTOR)


def node_environments(
    nodes: int,
    bootstrap: str,
    base_port: int,
    data_dir: Path,
    replication: str,
    environ: Mapping[str, str],
) -> dict[str, dict[str, str]]:
    """Each node's name and environment: the given one plus the settings that make the nodes one deployment.

    The nodes share one ``FLUX_CLUSTER_SECRET`` for their calls to each other: the given one, else
    one made for this run (docs/cluster.md).
    """
    host = environ.get("FLUX_HOST") or "127.0.0.1"
    secret = environ.get("FLUX_CLUSTER_SECRET") or secrets.token_urlsafe(32)
    reachable = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    envs: dict[str, dict[str, str]] = {}
    for index in range(nodes):
        name = f"node-{index + 1}"
        port = base_port + index
        envs[name] = {
            **environ,
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "FLUX_APP_ID": environ.get("FLUX_APP_ID") or "flux",
            "FLUX_HOST": host,
            "FLUX_PORT": str(port),
            "FLUX_ADVERTISED_URL": f"http://{reachable}:{port}",
            "FLUX_DATA_DIR": str(data_dir / name),
            "FLUX_REPLICATION_FACTOR": replication,
            "FLUX_CLUSTER_SECRET": secret,
            "PYTHONUNBUFFERED": "1",  # lines reach the prefixed output as they are written
        }
    return envs


class Node:
    """One ``flux serve`` child whose output is copied to ``out``, each line prefixed with its name."""

    def __init__(self, name: str, env: dict[str, str], out: IO[str], lock: threading.Lock) -> None:
        self.name = name
        self.env = env
        self.url = env["FLUX_ADVERTISED_URL"]
        self._out = out
        self._lock = lock
        self.proc: subprocess.Popen[bytes] | None = None
        self._pump: threading.Thread | None = None
        self.ready = False

    def start(self) -> None:
        """Spawn the node in its own session, so the terminal's Ctrl-C reaches only this command."""
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "api.cli", "serve"],
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self._pump = threading.Thread(target=self._copy_output, name=f"{self.name}-output", daemon=True)
        self._pump.start()

    def _copy_output(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for raw in self.proc.stdout:
            self.say(raw.decode(errors="replace").rstrip("\n"))

    def say(self, line: str) -> None:
        """Print one line under this node's name."""
        with self._lock:
            print(f"{self.name} | {line}", file=self._out, flush=True)

    def exit_code(self) -> int | None:
        """The exit code once the process ended, else None."""
        return None if self.proc is None else self.proc.poll()

    def check_ready(self, client: httpx.Client) -> bool:
        """True once ``/ready`` answered 200 (remembered)."""
        if not self.ready and self.exit_code() is None:
            with contextlib.suppress(httpx.HTTPError):
                self.ready = client.get(f"{self.url}/ready", timeout=1.0).status_code == 200
        return self.ready

    def signal(self, sig: signal.Signals) -> None:
        """Send ``sig`` if the node still runs."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(sig)

    def finish(self) -> None:
        """Wait for the output copy to drain after the process ended."""
        if self._pump is not None:
            self._pump.join(timeout=5)


class Shutdown:
    """Signals turn into one orderly stop; a second one hurries it (SIGKILL instead of waiting)."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, say: Say) -> None:
        self.requested = threading.Event()
        self.hurry = threading.Event()
        self._say = say
        self._previous: dict[signal.Signals, object] = {}

    def install(self) -> None:
        """Handle SIGINT and SIGTERM (the first raises KeyboardInterrupt to leave whatever is in progress)."""
        for sig in self.SIGNALS:
            self._previous[sig] = signal.signal(sig, self._on_signal)

    def uninstall(self) -> None:
        """Put back the handlers that were there before."""
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        if not self.requested.is_set():
            self.requested.set()
            raise KeyboardInterrupt
        self.hurry.set()
        self._say("stopping now (SIGKILL)")


def stop_nodes(nodes: list[Node], shutdown: Shutdown, timeout: float = NODE_STOP_TIMEOUT_S) -> None:
    """SIGTERM every node, wait for all (SIGKILL past ``timeout`` or when hurried), then drain their output."""
    for node in nodes:
        node.signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while any(node.exit_code() is None for node in nodes):
        if shutdown.hurry.is_set() or time.monotonic() >= deadline:
            for node in nodes:
                node.signal(signal.SIGKILL)
        time.sleep(0.1)
    for node in nodes:
        node.finish()


def run_cluster(
    nodes: int = DEFAULT_NODES,
    brokers: int = 3,
    base_port: int = 3000,
    data_dir: Path = DEFAULT_DATA_DIR,
    kafka_dir: Path | None = None,
    kafka_port: int | None = None,
    out: IO[str] = sys.stdout,
) -> int:
    """Run brokers and nodes until a signal (or until every node exited); 0 after a requested stop."""
    lock = threading.Lock()

    def say(line: str) -> None:
        with lock:
            print(f"cluster | {line}", file=out, flush=True)

    shutdown = Shutdown(say)
    shutdown.install()
    started = time.monotonic()
    kafka: LocalKafkaCluster | None = None  # set when this command started the brokers and must stop them
    running: list[Node] = []
    code = 0
    try:
        bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "")
        local_brokers = None
        if bootstrap:
            say(f"using Kafka at KAFKA_BOOTSTRAP_SERVERS={bootstrap}")
        else:
            ports = None if kafka_port is None else cluster_ports(brokers, kafka_port)
            cluster = LocalKafkaCluster(kafka_dir, brokers, ports=ports, progress=lambda m: say(f"kafka: {m}"))
            local_brokers = len(cluster.brokers)
            if cluster.running():
                say(f"using the local cluster that already runs in {cluster.data_dir} (it stays up afterwards)")
            else:
                kafka = cluster
            bootstrap = cluster.start()
            say(f"Kafka logs: {cluster.data_dir}/broker-*/kafka.log")
        envs = node_environments(
            nodes, bootstrap, base_port, data_dir, replication_factor(local_brokers, os.environ), os.environ
        )
        for name, env in envs.items():
            node = Node(name, env, out, lock)
            node.start()
            running.append(node)
        say(f"started {nodes} Flux nodes (app {envs['node-1']['FLUX_APP_ID']}, Kafka {bootstrap}); Ctrl-C stops all")
        code = _watch(running, say, started)
    except KeyboardInterrupt:
        say("stopping the Flux nodes, then the brokers...")
    except LocalKafkaError as exc:
        say(f"error: {exc}")
        code = 1
    finally:
        shutdown.requested.set()  # from here on a signal only hurries the stop
        stop_nodes(running, shutdown)
        for node in running:
            say(f"{node.name} exited with code {node.exit_code()}")
        if kafka is not None:
            if shutdown.hurry.is_set():
                kafka.kill()
            else:
                kafka.stop()
            say("brokers stopped")
        shutdown.uninstall()
    return code


def _watch(nodes: list[Node], say: Say, started: float) -> int:
    """Report each node once ready and each that exits; return 1 once none is left (else a signal ends it).

    A node that stopped itself with an error (exit code 1: a failed write, or the zombie fence
    after a freeze) is started again, as a supervisor would, up to :data:`MAX_RESTARTS` times; one
    killed by a signal (the user's ``kill -9``) or refusing its configuration (exit code 2) is not.
    """
    all_ready = False
    exited: set[str] = set()
    restarts: dict[str, int] = {}
    with httpx.Client() as client:
        while True:
            for node in nodes:
                if not node.ready and node.check_ready(client):
                    say(f"{node.name} ready at {node.url} ({time.monotonic() - started:.1f} s)")
                code = node.exit_code()
                if code == 1 and restarts.get(node.name, 0) < MAX_RESTARTS:
                    restarts[node.name] = restarts.get(node.name, 0) + 1
                    say(f"{node.name} stopped itself (exit code 1); starting it again, as a supervisor would")
                    node.finish()
                    node.ready = False
                    node.start()
                    continue
                if node.name not in exited and code is not None:
                    exited.add(node.name)
                    say(f"{node.name} exited with code {node.exit_code()}")
            if not all_ready and all(node.ready for node in nodes):
                all_ready = True
                urls = ", ".join(node.url for node in nodes)
                say(f"all {len(nodes)} nodes ready in {time.monotonic() - started:.1f} s: {urls}")
            if len(exited) == len(nodes):
                say("every node exited")
                return 1
            time.sleep(0.25)
