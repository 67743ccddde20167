"""A Faust Kafka transport whose worker consumer reads ``read_committed`` and guards its commits.

The batch endpoint writes each batch in one Kafka transaction. Faust reads committed records
only under ``processing_guarantee="exactly_once"`` (which swaps in per-partition transactional
producers we do not want), so this transport sets the isolation level on the consumer it
builds, before the consumer starts. Without it the reducer would see half-written batches and,
worse, records of aborted transactions whose publisher was told they failed.

Before committing source offsets Faust flushes its producer, but aiokafka's ``flush()`` returns
normally when a send failed: the commit would pass records whose changelog writes were lost. The
consumer therefore asks the app's ``commit_guard`` (the entity store's
:meth:`agents.table.store.EntityStore.changelog_written`) before every commit, and commits nothing
when a changelog write failed (the store has then already stopped the worker).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from faust.transport.drivers import aiokafka as faust_aiokafka

log = logging.getLogger(__name__)


class ReadCommittedConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    """Faust's aiokafka consumer thread, reading only committed records."""

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        consumer._isolation_level = "read_committed"  # read by AIOKafkaConsumer.start()
        return consumer


class ReadCommittedConsumer(faust_aiokafka.Consumer):
    """Faust's aiokafka consumer using :class:`ReadCommittedConsumerThread`, whose commits wait for
    the changelog (see the module docstring)."""

    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return ReadCommittedConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def _commit(self, offsets: Mapping[Any, int]) -> bool:
        guard = getattr(self.app, "commit_guard", None)
        if guard is not None and not await guard():
            log.error("not committing source offsets %s: a changelog write was not acknowledged", dict(offsets))
            return False
        committed: bool = await super()._commit(offsets)
        return committed


class ReadCommittedTransport(faust_aiokafka.Transport):
    """Faust's aiokafka transport with a read-committed consumer."""

    Consumer = ReadCommittedConsumer
