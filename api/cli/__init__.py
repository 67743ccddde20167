"""The ``flux`` command (``api.cli.main``, typer) and the programs of its subcommands: ``flux cluster``,
``flux backfill``, ``flux replay``, the client commands on :mod:`flux.client` (``api.cli.client_commands``:
publish, get, ls, history, tail, export and import, whose NDJSON transfers are ``api.cli.transfer``),
how they reach a node and report failures (``api.cli.remote``), and progress bars (``api.cli.progress``)."""

from api.cli.main import main

__all__ = ["main"]
