"""A Faust Kafka transport whose worker consumer reads ``read_committed``.

The batch endpoint writes each batch in one Kafka transaction. Faust reads committed records
only under ``processing_guarantee="exactly_once"`` (which swaps in per-partition transactional
producers we do not want), so this transport sets the isolation level on the consumer it
builds, before the consumer starts. Without it the reducer would see half-written batches and,
worse, records of aborted transactions whose publisher was told they failed.
"""

from __future__ import annotations

from typing import Any

from faust.transport.drivers import aiokafka as faust_aiokafka


class ReadCommittedConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    """Faust's aiokafka consumer thread, reading only committed records."""

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        consumer._isolation_level = "read_committed"  # read by AIOKafkaConsumer.start()
        return consumer


class ReadCommittedConsumer(faust_aiokafka.Consumer):
    """Faust's aiokafka consumer using :class:`ReadCommittedConsumerThread`."""

    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return ReadCommittedConsumerThread(self, loop=self.loop, beacon=self.beacon)


class ReadCommittedTransport(faust_aiokafka.Transport):
    """Faust's aiokafka transport with a read-committed consumer."""

    Consumer = ReadCommittedConsumer
