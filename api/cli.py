"""The ``flux`` command: ``flux serve`` runs a node; ``flux kafka start|stop|status`` a local broker."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

from flux.config import Settings
from flux.datadir import claim_data_dir
from flux.topics import TopicMismatch, ensure_topics

LOCAL_KAFKA_DIR = Path(".flux/kafka")
MIN_ADMIN_TOKEN_LENGTH = 32


def _progress(message: str) -> None:
    print(f"flux: {message}", file=sys.stderr)


def _local_kafka(args: argparse.Namespace) -> object:
    from flux.localkafka import LocalKafka

    return LocalKafka(Path(args.data_dir), port=args.port, controller_port=args.controller_port, progress=_progress)


def cmd_serve(args: argparse.Namespace) -> int:
    """Start a local broker if none is configured, create the topics, run the node."""
    overrides = {k: v for k, v in {"port": args.port, "host": args.host}.items() if v is not None}
    settings = Settings(**overrides)  # type: ignore[arg-type]
    if settings.auth_enabled and len(settings.admin_token or "") < MIN_ADMIN_TOKEN_LENGTH:
        print(
            f"flux: FLUX_AUTH_ENABLED=true needs FLUX_ADMIN_TOKEN of at least {MIN_ADMIN_TOKEN_LENGTH} characters "
            "(e.g. from `python -c 'import secrets; print(secrets.token_urlsafe(32))'`); refusing to start",
            file=sys.stderr,
        )
        return 2
    if not os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        from flux.localkafka import LocalKafka

        broker = LocalKafka(LOCAL_KAFKA_DIR, port=9092, controller_port=9093, progress=_progress)
        settings.kafka_bootstrap_servers = broker.start()
        print(f"flux: using the local Kafka broker at {settings.kafka_bootstrap_servers}", file=sys.stderr)
    try:
        cluster_id = asyncio.run(ensure_topics(settings))
    except TopicMismatch as exc:
        print(f"flux: {exc}", file=sys.stderr)
        return 2
    moved = claim_data_dir(settings.data_dir, cluster_id, settings.app_id)
    if moved is not None:
        print(f"flux: {settings.data_dir} belonged to another Kafka cluster; moved it to {moved}", file=sys.stderr)
    import uvloop  # the worker's loop: faster sockets and scheduling than asyncio's default

    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    asyncio.set_event_loop(asyncio.new_event_loop())
    from api.server import run_node

    print(f"flux: serving on http://{settings.host}:{settings.port} (docs at /docs)", file=sys.stderr)
    run_node(settings)
    return 0


def cmd_kafka(args: argparse.Namespace) -> int:
    """Manage the project's local single-node KRaft broker."""
    broker = _local_kafka(args)
    if args.action == "start":
        print(broker.start())  # type: ignore[attr-defined]
    elif args.action == "stop":
        broker.stop()  # type: ignore[attr-defined]
    else:
        running = broker.is_running()  # type: ignore[attr-defined]
        print(f"running at {broker.bootstrap}" if running else "stopped")  # type: ignore[attr-defined]
        return 0 if running else 1
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``flux`` command."""
    parser = argparse.ArgumentParser(prog="flux", description="Flux: event-sourced world state on Kafka")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run a Flux node (HTTP API + reducer) in the foreground")
    serve.add_argument("--port", type=int, default=None, help="HTTP port (default FLUX_PORT or 3000)")
    serve.add_argument("--host", default=None, help="HTTP bind address (default FLUX_HOST or 127.0.0.1)")
    serve.set_defaults(func=cmd_serve)
    kafka = commands.add_parser("kafka", help="a local single-node Kafka broker (KRaft) for development")
    kafka.add_argument("action", choices=["start", "stop", "status"])
    kafka.add_argument("--data-dir", default=str(LOCAL_KAFKA_DIR))
    kafka.add_argument("--port", type=int, default=9092)
    kafka.add_argument("--controller-port", type=int, default=9093)
    kafka.set_defaults(func=cmd_kafka)
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
