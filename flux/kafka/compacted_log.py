"""A small compacted topic every Flux process reads whole and follows: shared, durable settings.

One partition, read from the beginning without a consumer group, each record handed to
:meth:`CompactedLog.apply` in log order; a write (acks=all, idempotent producer) returns once
this process has read its own record back, so the caller sees the log's verdict. Subclasses fold
the records into what they keep (namespaces, idempotency keys).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError

from flux.config import Settings
from flux.kafka.publisher import PublishFailed
from flux.kafka.security import client_options

log = logging.getLogger(__name__)

CATCH_UP_TIMEOUT_S = 60.0


class CompactedLog:
    """Follows one compacted topic into :meth:`apply`; :meth:`write` appends and reads back."""

    def __init__(self, settings: Settings, topic: str, name: str) -> None:
        self._settings = settings
        self._partition = TopicPartition(topic, 0)
        self._name = name
        self._position = 0  # the next offset to read
        self._advanced = asyncio.Condition()
        self._producer: AIOKafkaProducer | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None

    def apply(self, key: bytes, value: bytes | None) -> None:
        """Fold one record (``value`` None: a tombstone); raise ValueError to skip a bad one."""
        raise NotImplementedError

    async def start(self) -> None:
        """Connect, then read the topic up to its current end before returning."""
        bootstrap = self._settings.kafka_bootstrap_servers
        client_id = f"{self._settings.app_id}-{self._name}"
        self._producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap,
            client_id=client_id,
            acks="all",
            enable_idempotence=True,
            request_timeout_ms=self._settings.publish_timeout_ms,
            **client_options(self._settings),
        )
        await self._producer.start()
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap,
            client_id=client_id,
            group_id=None,
            enable_auto_commit=False,
            fetch_max_wait_ms=100,
            **client_options(self._settings),
        )
        await self._consumer.start()
        self._consumer.assign([self._partition])
        await self._consumer.seek_to_beginning(self._partition)
        end = (await self._consumer.end_offsets([self._partition]))[self._partition]
        self._task = asyncio.create_task(self._run(), name=f"flux-{self._name}")
        try:
            await self._read_up_to(end, CATCH_UP_TIMEOUT_S)
        except TimeoutError as exc:
            raise RuntimeError(f"could not read the {self._name} topic within {CATCH_UP_TIMEOUT_S:.0f} s") from exc

    async def stop(self) -> None:
        """Stop reading and close the clients."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        for client in (self._consumer, self._producer):
            if client is not None:
                with contextlib.suppress(Exception):
                    await client.stop()

    async def _run(self) -> None:
        assert self._consumer is not None
        while True:
            try:
                fetched = await self._consumer.getmany(timeout_ms=1000)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the broker is away: keep trying
                log.warning("%s fetch failed: %r", self._name, exc)
                await asyncio.sleep(1)
                continue
            for messages in fetched.values():
                for message in messages:
                    try:
                        self.apply(message.key or b"", message.value)
                    except ValueError as exc:
                        log.warning("skipping %s record at offset %d: %s", self._name, message.offset, exc)
                    self._position = message.offset + 1
            # Offsets may have no record (compacted or expired away, transaction markers): the
            # consumer's position says how far the log is read all the same.
            self._position = max(self._position, await self._consumer.position(self._partition))
            async with self._advanced:
                self._advanced.notify_all()

    async def _read_up_to(self, offset: int, timeout_s: float) -> None:
        """Wait until every record before ``offset`` has been folded."""
        async with self._advanced:
            await asyncio.wait_for(self._advanced.wait_for(lambda: self._position >= offset), timeout_s)

    async def write(self, key: bytes, value: bytes | None) -> None:
        """Append one record (acks=all) and wait until this process has read it back."""
        await self.write_many([(key, value)])

    async def write_many(self, records: list[tuple[bytes, bytes | None]]) -> None:
        """Append records in order (acks=all) and wait until this process has read the last one back."""
        assert self._producer is not None, f"{self._name} log not started"
        producer = self._producer
        topic = self._partition.topic
        timeout = self._settings.publish_timeout_ms / 1000

        async def send_all() -> int:
            sending = [await producer.send(topic, value, key=key, partition=0) for key, value in records]
            sent = await asyncio.gather(*sending)
            return int(sent[-1].offset)

        try:
            last = await asyncio.wait_for(send_all(), timeout)
            await self._read_up_to(last + 1, timeout)
        except (KafkaError, TimeoutError) as exc:
            raise PublishFailed(f"the broker did not acknowledge the {self._name} change: {exc!r}") from exc
