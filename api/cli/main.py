"""The ``flux`` command (typer): ``flux serve`` runs a node, ``flux kafka start|stop|status`` manages a
local broker (``--brokers 3``: a local cluster), ``flux cluster`` runs local brokers and several nodes in
the foreground, ``flux backfill`` publishes a file of events, ``flux replay`` re-derives state from the
log; the client commands (``publish``, ``get``, ``ls``, ``tail``, ``history``, ``export``, ``import``)
talk to a running node through :mod:`flux.client` (:mod:`api.cli.client_commands`).

``main(argv)`` returns the exit status, as ``python -m api.cli`` and the ``flux`` console script need.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from enum import StrEnum
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Annotated

import typer
from aiokafka.errors import KafkaConnectionError
from pydantic import ValidationError

from api.cli.client_commands import register as register_client_commands
from api.cli.remote import Token, Url
from flux import localkafka
from flux.config import Settings
from flux.datadir import claim_data_dir
from flux.kafka.broker_check import diagnose
from flux.kafka.security import uses_tls
from flux.kafka.topics import TopicMismatch, ensure_topics
from flux.localkafka.process import DEFAULT_START_TIMEOUT
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
    from api.cli.backfill import Backfill, BackfillAborted, Checkpoint, read_items
    from api.cli.progress import backfill_progress

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
    progress = backfill_progress(None if path is None else path.stat().st_size)
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

    from api.cli.progress import replay_progress
    from api.cli.replay import ReplayFailed, request_body, run_replay

    settings = Settings()
    token = args.token or os.environ.get("FLUX_TOKEN") or settings.admin_token
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    body = request_body(args.from_beginning, args.from_timestamp, args.from_offset, args.to_timestamp)
    with httpx.Client(base_url=args.url or settings.url, headers=headers, timeout=60) as client:
        try:
            return run_replay(client, body, progress=replay_progress())
        except (ReplayFailed, httpx.HTTPError) as exc:
            print(f"\nflux: {exc}", file=sys.stderr)
            return 1


def _version(value: bool) -> None:
    if value:
        try:
            number = version("flux-state")
        except PackageNotFoundError:  # a checkout that was never installed
            number = "unknown"
        typer.echo(f"flux {number}")
        raise typer.Exit()


app = typer.Typer(
    name="flux",
    help="Flux: event-sourced world state on Kafka. Run a node, or talk to one.",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
    pretty_exceptions_enable=False,
)


@app.callback()
def flux(
    show_version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="print the version and exit")
    ] = False,
) -> None:
    """Flux: event-sourced world state on Kafka. Run a node (serve, cluster, kafka), feed it (publish,
    backfill, import), read it (get, ls, history, tail, export), or rebuild it (replay)."""


def _exit(code: int) -> None:
    if code:
        raise typer.Exit(code)


@app.command(rich_help_panel="Run")
def serve(
    port: Annotated[int | None, typer.Option(help="HTTP port (default FLUX_PORT or 3000)")] = None,
    host: Annotated[str | None, typer.Option(help="HTTP bind address (default FLUX_HOST or 127.0.0.1)")] = None,
) -> None:
    """Run a Flux node (HTTP API + reducer) in the foreground."""
    _exit(cmd_serve(argparse.Namespace(port=port, host=host)))


class KafkaAction(StrEnum):
    """What ``flux kafka`` does."""

    start = "start"
    stop = "stop"
    kill = "kill"
    status = "status"
    jars = "jars"


@app.command(rich_help_panel="Run")
def kafka(
    action: Annotated[KafkaAction, typer.Argument(help="start, stop, kill, status or jars", show_default=False)],
    brokers: Annotated[
        int | None,
        typer.Option(help="start a KRaft cluster of N brokers (each broker and controller; N=3 tolerates one failure)"),
    ] = None,
    data_dir: Annotated[
        Path | None,
        typer.Option(
            help="default $FLUX_KAFKA_DATA_DIR or ./.flux/kafka; with --brokers N>1 $FLUX_KAFKA_CLUSTER_DIR or "
            "./.flux/kafka-cluster. stop/kill/status without it act on both"
        ),
    ] = None,
    port: Annotated[
        int | None,
        typer.Option(help="client port (default $FLUX_KAFKA_PORT or 9092); a cluster's brokers use port, port+2..."),
    ] = None,
    controller_port: Annotated[
        int | None,
        typer.Option(help="controller port of one broker (default $FLUX_KAFKA_CONTROLLER_PORT or 9093)"),
    ] = None,
    timeout: Annotated[float, typer.Option(help="seconds to wait for readiness")] = DEFAULT_START_TIMEOUT,
) -> None:
    """A local Kafka broker, or cluster (--brokers 3), for development."""
    args = argparse.Namespace(
        command=action.value,
        brokers=brokers,
        data_dir=data_dir,
        port=port,
        controller_port=controller_port,
        timeout=timeout,
    )
    _exit(cmd_kafka(args))


@app.command(rich_help_panel="Run")
def cluster(
    nodes: Annotated[int, typer.Option(help="Flux nodes, on ports PORT, PORT+1...")] = 3,
    brokers: Annotated[int, typer.Option(help="local Kafka brokers (none with KAFKA_BOOTSTRAP_SERVERS)")] = 3,
    port: Annotated[int, typer.Option(help="HTTP port of the first node")] = 3000,
    data_dir: Annotated[str, typer.Option(help="the nodes' data dirs go under it, one each")] = ".flux/cluster",
    kafka_dir: Annotated[
        Path | None, typer.Option(help="the brokers' data (default .flux/kafka-cluster)", show_default=False)
    ] = None,
    kafka_port: Annotated[
        int | None, typer.Option(help="first broker's port (default 9092: 9092, 9094...)", show_default=False)
    ] = None,
) -> None:
    """Local Kafka brokers and several Flux nodes, until Ctrl-C."""
    args = argparse.Namespace(
        nodes=nodes, brokers=brokers, port=port, data_dir=data_dir, kafka_dir=kafka_dir, kafka_port=kafka_port
    )
    _exit(cmd_cluster(args))


@app.command(rich_help_panel="Feed")
def backfill(
    file: Annotated[str, typer.Argument(help="JSON Lines or a JSON array of events; - for standard input")],
    url: Url = None,
    token: Token = None,
    batch_size: Annotated[int, typer.Option(help="events per POST")] = 1000,
    rejects: Annotated[
        str | None, typer.Option(help="where refused events go (default FILE.rejects.jsonl)", show_default=False)
    ] = None,
    restart: Annotated[bool, typer.Option("--restart", help="ignore the checkpoint and send the whole file")] = False,
) -> None:
    """Publish a file of (historic) events, resumably."""
    args = argparse.Namespace(file=file, url=url, token=token, batch_size=batch_size, rejects=rejects, restart=restart)
    _exit(cmd_backfill(args))


@app.command(rich_help_panel="Rebuild")
def replay(
    from_beginning: Annotated[bool, typer.Option("--from-beginning", help="every event the topic still has")] = False,
    from_timestamp: Annotated[
        str | None, typer.Option(metavar="T", help="from the first record the log received at or after T")
    ] = None,
    from_offset: Annotated[
        str | None, typer.Option(metavar="P:O[,P:O]", help="only these partitions, each from an offset")
    ] = None,
    to_timestamp: Annotated[
        str | None, typer.Option(metavar="T", help="stop at the last record received at or before T")
    ] = None,
    url: Url = None,
    token: Annotated[
        str | None,
        typer.Option(help="admin token (default FLUX_TOKEN, then FLUX_ADMIN_TOKEN)", show_default=False),
    ] = None,
) -> None:
    """Re-derive state from the events topic, then switch to it."""
    starts = [from_beginning, from_timestamp is not None, from_offset is not None]
    if sum(starts) != 1:
        raise typer.BadParameter(
            "give exactly one of --from-beginning, --from-timestamp or --from-offset", param_hint="start"
        )
    args = argparse.Namespace(
        from_beginning=from_beginning,
        from_timestamp=from_timestamp,
        from_offset=from_offset,
        to_timestamp=to_timestamp,
        url=url,
        token=token,
    )
    _exit(cmd_replay(args))


register_client_commands(app)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``flux`` command: run it, return its exit status."""
    try:
        app(args=argv, prog_name="flux")
    except SystemExit as exit:
        code = exit.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
