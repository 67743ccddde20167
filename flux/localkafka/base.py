"""What every part of the local Kafka launcher shares: its error, its progress callback, the Kafka it runs."""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Callable, Iterator
from pathlib import Path

KAFKA_VERSION = "4.1.1"
DEFAULT_HOST = "127.0.0.1"

Progress = Callable[[str], None]
"""Called with one line of progress ("starting broker ...") at each step that takes a while."""


class LocalKafkaError(RuntimeError):
    """The local broker could not be set up, started or stopped."""


def quiet(_: str) -> None:
    """The :data:`Progress` that reports nothing."""
    return None


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock (flock) so concurrent processes do not race on one directory."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
