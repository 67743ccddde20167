"""The launcher's command line: ``python -m flux.localkafka start|stop|kill|status|jars`` and ``flux kafka ...``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from flux.localkafka.base import LocalKafkaError, Progress
from flux.localkafka.cluster import LocalKafkaCluster, cluster_ports, read_cluster_layout
from flux.localkafka.jars import ensure_jars
from flux.localkafka.probe import broker_answers
from flux.localkafka.process import DEFAULT_START_TIMEOUT, LocalKafka
from flux.localkafka.settings import default_cluster_dir

DESCRIPTION = "A local Apache Kafka broker (KRaft, no ZooKeeper, no Docker) for development and tests."


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


Launcher = LocalKafka | LocalKafkaCluster


def open_launcher(
    data_dir: Path | None = None,
    brokers: int | None = None,
    port: int | None = None,
    controller_port: int | None = None,
    progress: Progress | None = None,
) -> Launcher:
    """The launcher for ``data_dir``: the cluster recorded there, a new cluster when ``brokers`` > 1, else one broker.

    A cluster's brokers take port pairs from ``port`` (client, controller: 9092/9093, 9094/9095...)
    and live under ``data_dir`` (default ``$FLUX_KAFKA_CLUSTER_DIR`` or ``.flux/kafka-cluster``).
    """
    has_layout = data_dir is not None and read_cluster_layout(data_dir.expanduser().resolve()) is not None
    if (brokers is not None and brokers > 1) or has_layout:
        ports = cluster_ports(brokers, port) if brokers is not None and port is not None else None
        return LocalKafkaCluster(data_dir, brokers, ports=ports, progress=progress)
    return LocalKafka(data_dir, port, controller_port, progress=progress)


def _found_launchers(port: int | None, controller_port: int | None) -> list[Launcher]:
    """For stop, kill and status without a data dir: the default broker and, if one was ever started, the cluster."""
    found: list[Launcher] = [LocalKafka(None, port, controller_port, progress=_stderr)]
    if read_cluster_layout(default_cluster_dir().resolve()) is not None:
        found.append(LocalKafkaCluster(None, progress=_stderr))
    return found


def _status(launcher: Launcher) -> int:
    """Report whether ``launcher``'s brokers run and answer; 0 all ready, 1 some not, 3 none running."""
    brokers = launcher.brokers if isinstance(launcher, LocalKafkaCluster) else [launcher]
    pids = {broker.node_id: broker.pid() for broker in brokers}
    if not any(pids.values()):
        _stderr(f"not running ({launcher.data_dir})")
        return 3
    ready = broker_answers(launcher.bootstrap, 5.0)
    if isinstance(launcher, LocalKafkaCluster):
        for broker in brokers:
            pid = pids[broker.node_id]
            _stderr(f"broker {broker.node_id} at {broker.bootstrap}: {f'pid {pid}' if pid else 'NOT running'}")
        _stderr(f"cluster {'answers' if ready else 'does NOT answer'} at {launcher.bootstrap} ({launcher.data_dir})")
    else:
        state = "ready" if ready else "NOT answering"
        _stderr(f"running, pid {pids[launcher.node_id]}, {state} at {launcher.bootstrap} ({launcher.data_dir})")
    print(launcher.bootstrap, flush=True)
    return 0 if ready and all(pids.values()) else 1


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The launcher's command-line arguments, shared by ``python -m flux.localkafka`` and ``flux kafka``."""
    parser.add_argument("command", choices=["start", "stop", "kill", "status", "jars"])
    parser.add_argument(
        "--brokers",
        type=int,
        default=None,
        help="start a KRaft cluster of N brokers (each broker and controller; N=3 tolerates one failure)",
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="default $FLUX_KAFKA_DATA_DIR or ./.flux/kafka; with --brokers N>1 $FLUX_KAFKA_CLUSTER_DIR or "
        "./.flux/kafka-cluster. stop/kill/status without it act on both",
    )
    parser.add_argument(
        "--port",
        type=int,
        default=None,
        help="client port (default $FLUX_KAFKA_PORT or 9092); a cluster's brokers use port, port+2, port+4...",
    )
    parser.add_argument(
        "--controller-port",
        type=int,
        default=None,
        help="controller port of one broker (default $FLUX_KAFKA_CONTROLLER_PORT or 9093; a cluster's: port+1...)",
    )
    parser.add_argument("--timeout", type=float, default=DEFAULT_START_TIMEOUT, help="seconds to wait for readiness")


def run(args: argparse.Namespace) -> int:
    """Carry out a parsed launcher command. Exit 0 on success, 1 on failure, 3 if not running (status)."""
    try:
        if args.command in ("start", "jars") or args.data_dir is not None or args.brokers is not None:
            launchers = [open_launcher(args.data_dir, args.brokers, args.port, args.controller_port, _stderr)]
        else:
            launchers = _found_launchers(args.port, args.controller_port)
        if args.command == "jars":
            print(ensure_jars(None, _stderr))
            return 0
        if args.command == "start":
            print(launchers[0].start(args.timeout), flush=True)
            return 0
        if args.command in ("stop", "kill"):
            for launcher in launchers:
                stopped = launcher.stop() if args.command == "stop" else launcher.kill()
                what = "brokers" if isinstance(launcher, LocalKafkaCluster) else "broker"
                _stderr(f"{what} {'stopped' if stopped else 'not running'} ({launcher.data_dir})")
            return 0
        codes = [_status(launcher) for launcher in launchers]
        return 0 if 0 in codes else min(codes)
    except LocalKafkaError as exc:
        _stderr(f"error: {exc}")
        return 1
    except KeyboardInterrupt:
        return 130


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m flux.localkafka start|stop|kill|status|jars``. Exit 0 on success, 1 on failure, 3 if not running."""
    parser = argparse.ArgumentParser(prog="python -m flux.localkafka", description=DESCRIPTION)
    add_arguments(parser)
    return run(parser.parse_args(argv))
