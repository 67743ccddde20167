"""The commands that talk to a running node through :mod:`flux.client`: ``publish``, ``get``, ``ls``,
``history``, ``tail``, ``export`` and ``import``.

Each takes ``--url`` and ``--token`` (else ``FLUX_URL`` / ``FLUX_TOKEN``) and, on any failure, prints
one line (``flux: 404 NotFound: ...``, ``flux: cannot reach Flux at ...: connection refused``) and
exits non-zero (:mod:`api.cli.remote`). Data goes to stdout: tables and colours on a terminal, JSON
lines (``--json``, or when stdout is a pipe) otherwise; progress and summaries go to stderr.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import re
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Annotated, Any

import orjson
import typer

from api.cli.remote import CommandFailed, Token, Url, async_client, client, on_terminal, reported, stderr_console
from api.cli.transfer import EXPORT_PAGE, IMPORT_SOURCE, IMPORT_STREAM, export, import_entities

if TYPE_CHECKING:  # imported when a command runs: `flux serve` loads none of the client
    from flux.client import Change, Entity, StoredEvent

DEFAULT_STREAM = "cli"
DEFAULT_SOURCE = "flux-cli"
PUBLISH_BATCH = 1000
LS_LIMIT = 100
Json = Annotated[bool, typer.Option("--json", help="JSON lines, whatever stdout is")]


def _line(value: Any) -> None:
    sys.stdout.write(orjson.dumps(value).decode() + "\n")


def _properties(text: list[str]) -> dict[str, Any]:
    """``key=value`` arguments as properties: the value as JSON when it is JSON (``22.5``, ``true``,
    ``null``, ``[1,2]``, ``"22"``), else the text itself (``celsius``)."""
    properties: dict[str, Any] = {}
    for item in text:
        name, sep, raw = item.partition("=")
        if not sep or not name:
            raise CommandFailed(f"{item!r} is not key=value", 2)
        try:
            properties[name] = orjson.loads(raw)
        except orjson.JSONDecodeError:
            properties[name] = raw
    return properties


def _envelopes(stream: IO[bytes], where: str) -> Iterator[dict[str, Any]]:
    for number, line in enumerate(stream, start=1):
        if not line.strip():
            continue
        try:
            value = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise CommandFailed(f"{where} line {number}: not JSON: {exc}") from None
        if not isinstance(value, dict):
            raise CommandFailed(f"{where} line {number}: an event must be a JSON object")
        yield value


def publish(
    ctx: typer.Context,
    entity_id: Annotated[str | None, typer.Argument(help="the entity; omit to read --file or stdin")] = None,
    properties: Annotated[
        list[str] | None, typer.Argument(help="key=value ... (values that parse as JSON are JSON)", show_default=False)
    ] = None,
    stream: Annotated[str, typer.Option(help="the events' stream (where an event has none)")] = DEFAULT_STREAM,
    source: Annotated[str, typer.Option(help="the events' source (where an event has none)")] = DEFAULT_SOURCE,
    timestamp: Annotated[int | None, typer.Option(help="Unix epoch ms (default now)", show_default=False)] = None,
    file: Annotated[
        Path | None,
        typer.Option("--file", "-f", help="NDJSON events (envelopes), one a line; - for stdin", show_default=False),
    ] = None,
    wait: Annotated[bool, typer.Option("--wait", help="answer once applied (a read afterwards sees it)")] = False,
    url: Url = None,
    token: Token = None,
) -> None:
    """Publish an event from arguments (flux publish ID temp=22.5 unit=celsius), or NDJSON events (--file, stdin)."""
    with reported(url), client(ctx, url, token) as flux:
        if entity_id is not None and file is None:
            result = flux.publish(
                entity_id, _properties(properties or []), stream=stream, source=source, timestamp=timestamp, wait=wait
            )
            typer.echo(result.event_id)
            return
        if entity_id is not None or properties:
            raise CommandFailed("give an entity and properties, or --file, not both", 2)
        if file is None and on_terminal(sys.stdin):
            raise CommandFailed("nothing to publish: give ENTITY_ID key=value..., --file FILE, or NDJSON on stdin", 2)
        where = "stdin" if file is None or str(file) == "-" else str(file)
        source_file = sys.stdin.buffer if where == "stdin" else Path(where).open("rb")  # noqa: SIM115
        accepted = failed = 0
        try:
            events = _envelopes(source_file, where)
            while batch := list(itertools.islice(events, PUBLISH_BATCH)):
                outcome = flux.publish_batch(batch, stream=stream, source=source, wait=wait)
                for index, item in enumerate(outcome.results):
                    if item.error is not None:
                        typer.echo(f"flux: event {accepted + failed + index + 1}: {item.error}", err=True)
                accepted += outcome.successful
                failed += outcome.failed
        finally:
            if source_file is not sys.stdin.buffer:
                source_file.close()
        typer.echo(f"published {accepted:,}, failed {failed:,}", err=True)
        if failed:
            raise typer.Exit(3)


def get(
    ctx: typer.Context,
    entity_id: Annotated[str, typer.Argument(help="the entity's id (may contain /)", show_default=False)],
    at: Annotated[
        str | None, typer.Option(help="as it was at this time (RFC 3339 or Unix epoch ms)", show_default=False)
    ] = None,
    url: Url = None,
    token: Token = None,
) -> None:
    """Show one entity as JSON (as it was --at a time)."""
    with reported(url), client(ctx, url, token) as flux:
        entity = flux.get(entity_id, at=_time(at))
        if entity is None:
            raise CommandFailed(f"no entity {entity_id!r}" + (f" at {at}" if at else ""))
        value = _entity_json(entity)
        if on_terminal(sys.stdout):
            from rich.console import Console

            Console().print_json(data=value)
        else:
            _line(value)


def ls(
    ctx: typer.Context,
    prefix: Annotated[str | None, typer.Option(help="only ids starting with this", show_default=False)] = None,
    namespace: Annotated[
        str | None, typer.Option(help="only ids NAMESPACE/... (a prefix applies inside)", show_default=False)
    ] = None,
    limit: Annotated[int, typer.Option(help="show at most this many; 0 for all")] = LS_LIMIT,
    at: Annotated[str | None, typer.Option(help="as they were at this time", show_default=False)] = None,
    as_json: Json = False,
    url: Url = None,
    token: Token = None,
) -> None:
    """List entities in id order (a table on a terminal, else JSON lines)."""
    with reported(url), client(ctx, url, token) as flux:
        page = min(limit, EXPORT_PAGE) if limit > 0 else EXPORT_PAGE
        found = flux.list(prefix, namespace=namespace, at=_time(at), page_size=page)
        shown = list(itertools.islice(found, limit + 1)) if limit > 0 else found
        more = False
        if isinstance(shown, list) and len(shown) > limit:
            shown, more = shown[:limit], True
        if as_json or not on_terminal(sys.stdout):
            for entity in shown:
                _line(_entity_json(entity))
        else:
            from rich.console import Console
            from rich.table import Table

            table = Table("id", "properties", "last updated", box=None, header_style="bold")
            for entity in shown:
                table.add_row(entity.id, orjson.dumps(entity.properties).decode(), entity.last_updated)
            Console().print(table)
        if more:
            typer.echo(f"(more than {limit:,}: --limit N or --limit 0 for all, or flux export)", err=True)


def history(
    ctx: typer.Context,
    entity_id: Annotated[str, typer.Argument(help="the entity's id", show_default=False)],
    since: Annotated[str | None, typer.Option(help="from this time (default 24 h ago)", show_default=False)] = None,
    until: Annotated[str | None, typer.Option(help="up to this time (default now)", show_default=False)] = None,
    limit: Annotated[int, typer.Option(help="at most this many events; 0 for all")] = LS_LIMIT,
    newest_first: Annotated[bool, typer.Option("--desc", help="newest first")] = False,
    as_json: Json = False,
    url: Url = None,
    token: Token = None,
) -> None:
    """An entity's stored events, oldest first (times: RFC 3339 or Unix epoch ms)."""
    with reported(url), client(ctx, url, token) as flux:
        page = min(limit, EXPORT_PAGE) if limit > 0 else 1000
        events: Any = flux.history(
            entity_id,
            since=_time(since),
            until=_time(until),
            order="desc" if newest_first else "asc",
            page_size=page,
        )
        if limit > 0:
            events = itertools.islice(events, limit)
        if as_json or not on_terminal(sys.stdout):
            for stored in events:
                _line(stored.envelope)
            return
        from rich.console import Console
        from rich.table import Table

        table = Table("time", "stream", "source", "event id", "change", box=None, header_style="bold")
        for stored in events:
            table.add_row(_when(stored.timestamp), stored.stream, stored.source, stored.event_id, _what(stored))
        Console().print(table)


def tail(
    ctx: typer.Context,
    pattern: Annotated[str, typer.Argument(help="an id, a prefix ending in *, or * for everything")] = "*",
    snapshot: Annotated[bool, typer.Option(help="start with the matching entities as they are")] = False,
    count: Annotated[int, typer.Option(help="stop after this many changes; 0 to follow until Ctrl-C")] = 0,
    as_json: Json = False,
    url: Url = None,
    token: Token = None,
) -> None:
    """Follow live changes over the WebSocket (reconnects by itself; Ctrl-C stops)."""
    from rich.console import Console

    from flux.client import Reconnected, SnapshotComplete

    err = stderr_console()
    out = Console(highlight=False)
    plain = as_json or not on_terminal(sys.stdout)

    async def follow() -> None:
        async with async_client(ctx, url, token) as flux, flux.subscribe([pattern], snapshot=snapshot) as changes:
            err.print(f"subscribed to {pattern} at {flux.url}", style="dim")
            seen = 0
            async for change in changes:
                if isinstance(change, Reconnected):
                    err.print(f"reconnected ({change.reason})", style="yellow")
                    continue
                if isinstance(change, SnapshotComplete):
                    continue
                if plain:
                    _line(change_json(change))
                    sys.stdout.flush()
                else:
                    out.print(change_line(change))
                seen += 1
                if count and seen >= count:
                    return

    with reported(url):
        try:
            asyncio.run(follow())
        except KeyboardInterrupt:
            raise typer.Exit(130) from None


def export_command(
    ctx: typer.Context,
    prefix: Annotated[str | None, typer.Option(help="only ids starting with this", show_default=False)] = None,
    namespace: Annotated[str | None, typer.Option(help="only ids NAMESPACE/...", show_default=False)] = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="write here (default stdout)", show_default=False)
    ] = None,
    page_size: Annotated[int, typer.Option(help="entities per request (at most FLUX_LIST_MAX_LIMIT)")] = EXPORT_PAGE,
    url: Url = None,
    token: Token = None,
) -> None:
    """Write the state as NDJSON, one entity a line ({"id", "properties", "lastUpdated"}), page by page."""
    started = time.monotonic()
    err = stderr_console()
    with reported(url), client(ctx, url, token, patient=True) as flux:
        out = sys.stdout.buffer if output is None else output.open("wb")
        try:
            status = err.status("exported 0 entities") if on_terminal() else None
            if status is not None:
                status.start()

            def shown(done: int) -> None:
                if status is not None:
                    rate = done / max(time.monotonic() - started, 1e-6)
                    status.update(f"exported {done:,} entities, {rate:,.0f}/s")

            try:
                count = export(flux, out, prefix=prefix, namespace=namespace, page_size=page_size, progress=shown)
            finally:
                if status is not None:
                    status.stop()
        finally:
            if out is not sys.stdout.buffer:
                out.close()
    seconds = time.monotonic() - started
    err.print(f"exported {count:,} entities in {seconds:.1f} s ({count / max(seconds, 1e-6):,.0f} entities/s)")


def import_command(
    ctx: typer.Context,
    file: Annotated[str, typer.Argument(help="NDJSON from flux export; - for stdin")],
    batch_size: Annotated[int, typer.Option(help="entities per batch request")] = 5000,
    stream: Annotated[str, typer.Option(help="the events' stream")] = IMPORT_STREAM,
    source: Annotated[str, typer.Option(help="the events' source")] = IMPORT_SOURCE,
    wait: Annotated[bool, typer.Option("--wait", help="answer each batch once applied")] = False,
    url: Url = None,
    token: Token = None,
) -> None:
    """Upsert entities from NDJSON (flux export's lines); importing the same file again applies nothing twice."""
    started = time.monotonic()
    err = stderr_console()
    with reported(url), client(ctx, url, token, patient=True) as flux:
        stdin = file == "-"
        stream_in = sys.stdin.buffer if stdin else Path(file).open("rb")  # noqa: SIM115
        status = err.status("imported 0 entities") if on_terminal() else None
        if status is not None:
            status.start()

        def shown(done: int) -> None:
            if status is not None:
                status.update(f"imported {done:,} entities")

        try:
            summary = import_entities(
                flux, stream_in, batch_size=batch_size, event_stream=stream, source=source, wait=wait, progress=shown
            )
        finally:
            if status is not None:
                status.stop()
            if not stdin:
                stream_in.close()
    seconds = time.monotonic() - started
    err.print(f"imported {summary.accepted:,} entities, rejected {summary.rejected:,} in {seconds:.1f} s")
    for reason, times in sorted(summary.reasons.items(), key=lambda kv: -kv[1])[:5]:
        err.print(f"  {times:,} x {reason}")
    if summary.rejected:
        raise typer.Exit(3)


# -- shapes ------------------------------------------------------------------------------------------
def _time(value: str | None) -> int | str | None:
    """A time option: Unix epoch ms when it is all digits, else RFC 3339 as given."""
    if value is None:
        return None
    return int(value) if value.isdigit() else value


def _entity_json(entity: Entity) -> dict[str, Any]:
    return {"id": entity.id, "properties": entity.properties, "lastUpdated": entity.last_updated}


def _when(timestamp: int) -> str:
    return datetime.fromtimestamp(timestamp / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _what(stored: StoredEvent) -> str:
    if stored.op == "delete":
        return "[red]deleted[/]"
    return orjson.dumps(stored.properties).decode()


def _wire_type(change: Change) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", type(change).__name__).lower()


def change_json(change: Change) -> dict[str, Any]:
    """A change as one JSON object: ``{"type": "state_update", "entity_id": ..., ...}``."""
    fields = dataclasses.asdict(change)
    entity = fields.pop("entity", None)
    if entity is not None:
        fields["entity"] = {
            "id": entity["id"],
            "properties": entity["properties"],
            "lastUpdated": entity["last_updated"],
        }
    return {"type": _wire_type(change), **fields}


def change_line(change: Change) -> str:
    """One rich line for a change."""
    from flux.client import EntityDeleted, EntityUpdate, PropertyRemoved, Snapshot, StateUpdate

    if isinstance(change, StateUpdate):
        value = orjson.dumps(change.value).decode()
        return f"[dim]{change.timestamp}[/]  [bold cyan]{change.entity_id}[/]  {change.property} = [green]{value}[/]"
    if isinstance(change, EntityUpdate | Snapshot):
        entity = change.entity
        kind = "snapshot" if isinstance(change, Snapshot) else "update"
        body = orjson.dumps(entity.properties).decode()
        return f"[dim]{entity.last_updated}[/]  [bold cyan]{entity.id}[/]  [magenta]{kind}[/] {body}"
    if isinstance(change, EntityDeleted):
        return f"[dim]{change.timestamp}[/]  [bold cyan]{change.entity_id}[/]  [red]deleted[/]"
    if isinstance(change, PropertyRemoved):
        return f"[bold cyan]{change.entity_id}[/]  [red]removed[/] {change.property}"
    return str(change_json(change))


def register(app: typer.Typer) -> None:
    """Add the client commands to ``flux``."""
    panel = "Talk to a node"
    app.command(rich_help_panel=panel)(publish)
    app.command(rich_help_panel=panel)(get)
    app.command(rich_help_panel=panel)(ls)
    app.command(rich_help_panel=panel)(history)
    app.command(rich_help_panel=panel)(tail)
    app.command("export", rich_help_panel=panel)(export_command)
    app.command("import", rich_help_panel=panel)(import_command)
