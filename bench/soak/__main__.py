"""``python -m bench.soak --help``."""

from bench.soak.cli import app

app()
