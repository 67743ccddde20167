"""The reducer's side of the change feed: one record per partition and batch on the changes topic.

Records are enqueued on the Faust app's producer after the batch's state is written, and not
awaited: the feed tells readers what changed, the changelog is what makes state durable. A
feed record lost in a crash costs live subscribers that change (the state itself is safe); a
failed send is logged.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from flux.model.changes import ChangeRecord, encode_records

log = logging.getLogger(__name__)


class ChangeFeed:
    """Publishes :class:`flux.model.changes.ChangeRecord` values to the changes topic."""

    def __init__(self, app: Any, topic: str) -> None:
        self._app = app
        self._topic = topic

    async def publish(self, record: ChangeRecord) -> None:
        """Enqueue ``record`` on the partition it describes."""
        producer = self._app.producer
        for value in encode_records(record):
            future = await producer.send(self._topic, None, value, record.partition, None, None)
            future.add_done_callback(self._on_sent)

    def _on_sent(self, done: asyncio.Future[Any]) -> None:
        if not done.cancelled() and done.exception() is not None:
            log.warning("change feed record not delivered: %r", done.exception())
