"""Background tasks of a node: how one is stopped."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any


async def cancel(task: asyncio.Task[Any] | None) -> None:
    """Cancel ``task`` (if there is one) and wait until it has ended, whatever it raised."""
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(BaseException):
        await task
