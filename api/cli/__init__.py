"""The ``flux`` command (``api.cli.main``) and the programs of its subcommands: ``flux cluster``,
``flux backfill``, ``flux replay``."""

from api.cli.main import main

__all__ = ["main"]
