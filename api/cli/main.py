"""The ``flux`` command: ``flux serve`` runs a node, ``flux backfill`` publishes a file of events,
``flux replay`` re-derives state from the log, ``flux kafka start|stop|status`` manages a local broker
(``--brokers 3``: a local cluster), ``flux cluster`` runs local brokers and several nodes in the foreground."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

from aiokafka.errors import KafkaConnectionError
from pydantic import ValidationError

from flux import localkafka
from flux.config import Settings
from flux.datadir import claim_data_dir
from flux.kafka.broker_check import diagnose
from flux.kafka.security import uses_tls
from flux.kafka.topics import TopicMismatch, ensure_topics
from flux.logs import say

LOCAL_KAFKA_DIR = Path(".flux/kafka")


def _invalid_settings(exc: ValidationError) -> str:
    """One line per invalid variable, named as it is set (``FLUX_PORT: ...``); a rule about several names them."""
    lines = []
    for error in exc.errors():
        if not error["loc"]:  # a model validator's rule (flux.config.Settings): its message names the variables
            lines.append(error["msg"])
            continue
        field = str(error["loc"][0])
        name = "KAFKA_BOOTSTRAP_SERVERS" if field == "kafka_bootstrap_servers" else f"FLUX_{field.upper()}"
        lines.append(f"{name}: {error['msg']}")
    return "; ".join(lines)


def cmd_serve(args: argparse.Namespace) -> int:
    """Start a local broker if none is configured, create the topics, run the node."""
    overrides = {k: v for k, v in {"port": args.port, "host": args.host}.items() if v is not None}
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        print(f"flux: invalid configuration: {_invalid_settings(exc)}; refusing to start", file=sys.stderr)
        return 2
    if not os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        from flux.localkafka import LocalKafka

        log_format = settings.log_format
        broker = LocalKafka(LOCAL_KAFKA_DIR, port=9092, controller_port=9093, progress=lambda m: say(m, log_format))
        settings = Settings(**overrides, kafka_bootstrap_servers=broker.start())
        say(f"using the local Kafka broker at {settings.kafka_bootstrap_servers}", settings.log_format)
    try:
        cluster_id = asyncio.run(ensure_topics(settings))
    except TopicMismatch as exc:
        say(str(exc), settings.log_format, "ERROR")
        return 2
    except KafkaConnectionError:
        diagnosis = asyncio.run(diagnose(settings))
        say(f"cannot use Kafka at {settings.kafka_bootstrap_servers}: {diagnosis.reason}", settings.log_format, "ERROR")
        return 2 if diagnosis.misconfigured else 1
    moved = claim_data_dir(settings.data_dir, cluster_id, settings.app_id)
    if moved is not None:
        say(
            f"{settings.data_dir} belonged to another Kafka cluster; moved it to {moved}",
            settings.log_format,
            "WARNING",
        )
    if not uses_tls(settings):  # uvloop closes TLS connections slowly: see kafka_security.uses_tls
        import uvloop  # the worker's loop: faster sockets and scheduling than asyncio's default

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    asyncio.set_event_loop(asyncio.new_event_loop())
    from api.server import run_node

    say(f"serving on http://{settings.host}:{settings.port} (docs at /docs)", settings.log_format)
    return run_node(settings)


def cmd_kafka(args: argparse.Namespace) -> int:
    """Manage the project's local KRaft broker, or cluster with ``--brokers N`` (see :mod:`flux.localkafka`)."""
    return localkafka.run(args)


def cmd_cluster(args: argparse.Namespace) -> int:
    """Run a local Kafka cluster and several nodes in the foreground (see :mod:`api.cli.cluster`)."""
    from api.cli.cluster import run_cluster

    return run_cluster(args.nodes, args.brokers, args.port, Path(args.data_dir), args.kafka_dir, args.kafka_port)


def cmd_backfill(args: argparse.Namespace) -> int:
    """Publish a file of events through the HTTP API (see :mod:`api.cli.backfill`)."""
    from api.cli.backfill import Backfill, BackfillAborted, Checkpoint, Progress, read_items

    settings = Settings()
    url = args.url or settings.url
    token = args.token or os.environ.get("FLUX_TOKEN")
    stdin = args.file == "-"
    path = None if stdin else Path(args.file)
    if path is not None and not path.is_file():
        print(f"flux: no such file: {path}", file=sys.stderr)
        return 2
    checkpoint = Checkpoint(None if path is None else path.with_name(path.name + ".flux-backfill.json"))
    if args.restart and checkpoint.path is not None:
        checkpoint.path.unlink(missing_ok=True)
    rejects_path = Path(args.rejects) if args.rejects else Path(f"{args.file if path else 'stdin'}.rejects.jsonl")
    stream = sys.stdin if path is None else path.open(encoding="utf-8")
    progress = Progress(None if path is None else path.stat().st_size)
    with rejects_path.open("a", encoding="utf-8") as rejects:
        backfill = Backfill(url, token, args.batch_size, rejects)
        try:
            summary = backfill.run(read_items(stream), checkpoint, progress, stream)
        except (BackfillAborted, ValueError) as exc:
            print(f"\nflux: {exc}", file=sys.stderr)
            return 1
        finally:
            backfill.close()
    rate = (summary.accepted + summary.rejected) / summary.seconds if summary.seconds else 0.0
    print(f"accepted {summary.accepted:,}, rejected {summary.rejected:,}, skipped {summary.skipped:,} (done before)")
    print(f"{summary.seconds:.1f} s, {rate:,.0f} events/s")
    if summary.rejected:
        print(f"rejected events and reasons: {rejects_path}")
        for reason, count in sorted(summary.reasons.items(), key=lambda kv: -kv[1])[:5]:
            print(f"  {count:,} x {reason}")
    return 0 if summary.rejected == 0 else 3


def cmd_replay(args: argparse.Namespace) -> int:
    """Re-derive state from the events topic on a running node (see :mod:`api.cli.replay`)."""
    import httpx

    from api.cli.replay import ReplayFailed, request_body, run_replay

    settings = Settings()
    token = args.token or os.environ.get("FLUX_TOKEN") or settings.admin_token
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    body = request_body(args.from_beginning, args.from_timestamp, args.from_offset, args.to_timestamp)
    with httpx.Client(base_url=args.url or settings.url, headers=headers, timeout=60) as client:
        try:
            return run_replay(client, body)
        except (ReplayFailed, httpx.HTTPError) as exc:
            print(f"\nflux: {exc}", file=sys.stderr)
            return 1


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``flux`` command."""
    parser = argparse.ArgumentParser(prog="flux", description="Flux: event-sourced world state on Kafka")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run a Flux node (HTTP API + reducer) in the foreground")
    serve.add_argument("--port", type=int, default=None, help="HTTP port (default FLUX_PORT or 3000)")
    serve.add_argument("--host", default=None, help="HTTP bind address (default FLUX_HOST or 127.0.0.1)")
    serve.set_defaults(func=cmd_serve)
    kafka = commands.add_parser("kafka", help="a local Kafka broker, or cluster (--brokers 3), for development")
    localkafka.add_arguments(kafka)
    kafka.set_defaults(func=cmd_kafka)
    cluster = commands.add_parser("cluster", help="local Kafka brokers and several Flux nodes, until Ctrl-C")
    cluster.add_argument("--nodes", type=int, default=3, help="Flux nodes, on ports PORT, PORT+1... (default 3)")
    cluster.add_argument(
        "--brokers", type=int, default=3, help="local Kafka brokers (default 3; none with KAFKA_BOOTSTRAP_SERVERS)"
    )
    cluster.add_argument("--port", type=int, default=3000, help="HTTP port of the first node (default 3000)")
    cluster.add_argument("--data-dir", default=".flux/cluster", help="the nodes' data dirs go under it, one each")
    cluster.add_argument("--kafka-dir", type=Path, default=None, help="the brokers' data (default .flux/kafka-cluster)")
    cluster.add_argument(
        "--kafka-port", type=int, default=None, help="first broker's port (default 9092: 9092, 9094...)"
    )
    cluster.set_defaults(func=cmd_cluster)
    backfill = commands.add_parser("backfill", help="publish a file of (historic) events, resumably")
    backfill.add_argument("file", help="JSON Lines or a JSON array of events; - for standard input")
    backfill.add_argument("--url", default=None, help="Flux URL (default FLUX_URL or http://localhost:3000)")
    backfill.add_argument("--token", default=None, help="bearer token (default FLUX_TOKEN)")
    backfill.add_argument("--batch-size", type=int, default=1000, help="events per POST (default 1000)")
    backfill.add_argument("--rejects", default=None, help="where refused events go (default FILE.rejects.jsonl)")
    backfill.add_argument("--restart", action="store_true", help="ignore the checkpoint and send the whole file")
    backfill.set_defaults(func=cmd_backfill)
    replay = commands.add_parser("replay", help="re-derive state from the events topic, then switch to it")
    start = replay.add_mutually_exclusive_group(required=True)
    start.add_argument("--from-beginning", action="store_true", help="every event the topic still has")
    start.add_argument("--from-timestamp", metavar="T", help="from the first record the log received at or after T")
    start.add_argument("--from-offset", metavar="P:O[,P:O]", help="only these partitions, each from an offset")
    replay.add_argument("--to-timestamp", metavar="T", help="stop at the last record received at or before T")
    replay.add_argument("--url", default=None, help="Flux URL (default FLUX_URL or http://localhost:3000)")
    replay.add_argument("--token", default=None, help="admin token (default FLUX_TOKEN, then FLUX_ADMIN_TOKEN)")
    replay.set_defaults(func=cmd_replay)
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
