"""Several local Kafka nodes forming one KRaft cluster: their layout on disk, their replication settings."""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from flux.localkafka.base import DEFAULT_HOST, LocalKafkaError, Progress, quiet
from flux.localkafka.jars import ensure_jars
from flux.localkafka.probe import probe_broker, run_sync
from flux.localkafka.process import (
    DEFAULT_START_TIMEOUT,
    DEFAULT_STOP_TIMEOUT,
    JVM_OPTS,
    LocalKafka,
    new_cluster_id,
    quorum_voters,
)
from flux.localkafka.settings import default_cluster_dir, default_port

DEFAULT_BROKERS = 3
CLUSTER_LAYOUT = "cluster.json"


def cluster_replication(brokers: int) -> dict[str, str]:
    """Broker settings for ``brokers`` nodes: replication factor min(3, N), min ISR one less (at least 1).

    With three brokers every topic has three replicas and an ``acks=all`` write needs two of them,
    so one broker may fail without stopping writes.
    """
    replicas = min(3, max(1, brokers))
    min_isr = max(1, replicas - 1)
    return {
        "default.replication.factor": str(replicas),
        "min.insync.replicas": str(min_isr),
        "offsets.topic.replication.factor": str(replicas),
        "transaction.state.log.replication.factor": str(replicas),
        "transaction.state.log.min.isr": str(min_isr),
        "share.coordinator.state.topic.replication.factor": str(replicas),
        "share.coordinator.state.topic.min.isr": str(min_isr),
    }


def cluster_ports(brokers: int, base_port: int) -> list[tuple[int, int]]:
    """``(client_port, controller_port)`` per broker, in pairs from ``base_port``: 9092/9093, 9094/9095..."""
    return [(base_port + 2 * i, base_port + 2 * i + 1) for i in range(brokers)]


class LocalKafkaCluster:
    """Several local :class:`LocalKafka` nodes, each a combined broker and controller, forming one KRaft cluster.

    Every node is a voter of a static quorum (``controller.quorum.voters``), so with three nodes
    the cluster survives the loss of any one. Each node has its own data dir ``<data_dir>/broker-<id>``
    (its log, pid file and KRaft log), and ``<data_dir>/cluster.json`` records the cluster id and
    the ports, so a later start (or ``stop`` from another process) finds the same cluster::

        cluster = LocalKafkaCluster(Path(".flux/kafka-cluster"), brokers=3)
        bootstrap = cluster.start()    # "127.0.0.1:9092,127.0.0.1:9094,127.0.0.1:9096"
        cluster.brokers[1].kill()      # SIGKILL one broker (fault tests); .start() brings it back
        cluster.stop()

    ``brokers`` and ``ports`` apply to a new cluster; an existing one keeps its layout (asking for
    another broker count is an error).

    Kafka 4.1 offers a static quorum (``controller.quorum.voters``, the same list on every node, format
    needs nothing more) and a dynamic one (``controller.quorum.bootstrap.servers``, formatted with
    ``--initial-controllers`` naming each voter's directory id). The dynamic kind only matters for
    adding or removing controllers later, which a local cluster never does, so this uses the static one.
    """

    def __init__(
        self,
        data_dir: Path | str | None = None,
        brokers: int | None = None,
        *,
        ports: Sequence[tuple[int, int]] | None = None,
        host: str = DEFAULT_HOST,
        kafka_home: Path | None = None,
        heap_opts: str | None = None,
        jvm_opts: Sequence[str] = JVM_OPTS,
        extra_properties: dict[str, str] | None = None,
        progress: Progress | None = None,
    ) -> None:
        self.data_dir = Path(data_dir if data_dir is not None else default_cluster_dir()).expanduser().resolve()
        self.progress: Progress = progress or quiet
        layout = read_cluster_layout(self.data_dir)
        if layout is not None:
            cluster_id, host, known_ports = layout
            if brokers is not None and brokers != len(known_ports):
                raise LocalKafkaError(
                    f"{self.data_dir} holds a cluster of {len(known_ports)} brokers, not {brokers}; "
                    "stop it and delete the directory to start another"
                )
            if ports is not None and list(ports) != known_ports:
                raise LocalKafkaError(f"{self.data_dir} holds a cluster on ports {known_ports}, not {list(ports)}")
            ports = known_ports
        else:
            cluster_id = new_cluster_id()
            count = brokers if brokers is not None else len(ports) if ports is not None else DEFAULT_BROKERS
            ports = list(ports) if ports is not None else cluster_ports(count, default_port())
            if count < 1 or len(ports) != count:
                raise LocalKafkaError(f"a cluster needs at least one broker and one port pair each (got {count})")
        self.cluster_id = cluster_id
        self.host = host
        voters = quorum_voters([(node_id, host, controller) for node_id, (_, controller) in enumerate(ports, 1)])
        properties = {**cluster_replication(len(ports)), **(extra_properties or {})}
        self.brokers: list[LocalKafka] = [
            LocalKafka(
                self.data_dir / f"broker-{node_id}",
                port,
                controller,
                host=host,
                node_id=node_id,
                quorum_voters=voters,
                cluster_id=cluster_id,
                kafka_home=kafka_home,
                heap_opts=heap_opts,
                jvm_opts=jvm_opts,
                extra_properties=properties,
                progress=self._broker_progress(node_id),
            )
            for node_id, (port, controller) in enumerate(ports, 1)
        ]

    def __repr__(self) -> str:
        return f"LocalKafkaCluster(data_dir={str(self.data_dir)!r}, bootstrap={self.bootstrap!r})"

    def _broker_progress(self, node_id: int) -> Progress:
        return lambda message: self.progress(f"broker {node_id}: {message}")

    @property
    def bootstrap(self) -> str:
        """Every broker's client address, comma-separated (``host:port,host:port,...``)."""
        return ",".join(broker.bootstrap for broker in self.brokers)

    @property
    def layout_file(self) -> Path:
        """``cluster.json``: the cluster id, host and ports, written on the first start."""
        return self.data_dir / CLUSTER_LAYOUT

    def is_running(self) -> bool:
        """True when any broker of the cluster runs."""
        return any(broker.is_running() for broker in self.brokers)

    def running(self) -> list[int]:
        """Node ids of the brokers that run."""
        return [broker.node_id for broker in self.brokers if broker.is_running()]

    def start(self, timeout: float = DEFAULT_START_TIMEOUT) -> str:
        """Start every broker that is not running, wait until all answer and see each other; return the bootstrap."""
        started = time.monotonic()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if not self.layout_file.exists():
            write_cluster_layout(self.data_dir, self.cluster_id, self.host, [(b.port, b.controller_port) for b in self])
        ensure_jars(self.brokers[0].kafka_home, self.progress)
        # Formatting is one short JVM per node: in parallel, as are the waits (no node answers before a quorum).
        with concurrent.futures.ThreadPoolExecutor(max_workers=len(self.brokers)) as pool:
            list(pool.map(lambda broker: broker.launch(), self.brokers))
        deadline = started + timeout
        for broker in self.brokers:
            broker.wait_ready(max(1.0, deadline - time.monotonic()))
        self.wait_all_registered(max(1.0, deadline - time.monotonic()))
        self.progress(f"{len(self.brokers)} brokers ready at {self.bootstrap} ({time.monotonic() - started:.1f} s)")
        return self.bootstrap

    def wait_all_registered(self, timeout: float = DEFAULT_START_TIMEOUT) -> None:
        """Block until the cluster's metadata lists every broker (a restarted one rejoined); raise if not in time."""
        wanted = {broker.node_id for broker in self.brokers}
        deadline = time.monotonic() + timeout
        seen: set[int] = set()
        while time.monotonic() < deadline:
            with contextlib.suppress(Exception):
                seen = set(run_sync(lambda: probe_broker(self.bootstrap, 5.0)))
                if wanted <= seen:
                    return
            time.sleep(0.25)
        raise LocalKafkaError(f"brokers {sorted(wanted - seen)} did not join the cluster within {timeout:.0f} s")

    def stop(self, timeout: float = DEFAULT_STOP_TIMEOUT) -> bool:
        """Stop every broker at once (SIGTERM, SIGKILL after ``timeout``); False if none was running."""
        with concurrent.futures.ThreadPoolExecutor(max_workers=len(self.brokers)) as pool:
            return any(list(pool.map(lambda broker: broker.stop(timeout), self.brokers)))

    def kill(self) -> bool:
        """SIGKILL every broker; False if none was running."""
        return any([broker.kill() for broker in self.brokers])

    def __iter__(self) -> Iterator[LocalKafka]:
        return iter(self.brokers)


def read_cluster_layout(data_dir: Path) -> tuple[str, str, list[tuple[int, int]]] | None:
    """The ``(cluster_id, host, [(port, controller_port)])`` recorded in ``data_dir``, or None for no cluster."""
    path = data_dir / CLUSTER_LAYOUT
    if not path.is_file():
        return None
    try:
        layout = json.loads(path.read_text())
        ports = [(int(b["port"]), int(b["controller_port"])) for b in layout["brokers"]]
        return str(layout["cluster_id"]), str(layout["host"]), ports
    except (ValueError, KeyError, TypeError) as exc:
        raise LocalKafkaError(f"{path} is not a cluster layout: {exc!r}") from None


def write_cluster_layout(data_dir: Path, cluster_id: str, host: str, ports: Sequence[tuple[int, int]]) -> None:
    """Record a cluster's id, host and ports in ``data_dir/cluster.json``."""
    brokers = [{"node_id": n, "port": p, "controller_port": c} for n, (p, c) in enumerate(ports, 1)]
    layout = {"cluster_id": cluster_id, "host": host, "brokers": brokers}
    (data_dir / CLUSTER_LAYOUT).write_text(json.dumps(layout, indent=2) + "\n")
