"""The namespaces topic: every Flux process follows it into a :class:`~flux.namespaces.Registry`.

The topic is compacted, has one partition and is keyed by namespace name; a record is the
namespace with its token hash (registration, new token) or a tombstone (deletion). Each process
reads it from the beginning without a consumer group, so all of them agree on the namespaces
and a restart loses none. A change returns once this process has read its own record back, so
the answer reflects the registry's verdict (e.g. who won a name two processes raced for).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError

from flux.config import Settings
from flux.namespaces import (
    InvalidRecord,
    Namespace,
    Registry,
    check_name,
    encode_record,
    hash_token,
    new_namespace_id,
    new_token,
)
from flux.publisher import PublishFailed

log = logging.getLogger(__name__)

CATCH_UP_TIMEOUT_S = 60.0


class NamespaceTaken(Exception):
    """The name is registered already."""


class UnknownNamespace(Exception):
    """No namespace has this name."""


class NamespaceLog:
    """Reads the namespaces topic into :attr:`registry`; writes registrations, new tokens, deletions."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._partition = TopicPartition(settings.namespaces_topic, 0)
        self.registry = Registry()
        self._position = 0  # the next offset to read
        self._advanced = asyncio.Condition()
        self._changing = asyncio.Lock()  # one change at a time from this process
        self._producer: AIOKafkaProducer | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Connect, then read the topic up to its current end before returning."""
        bootstrap = self._settings.kafka_bootstrap_servers
        self._producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap,
            client_id=f"{self._settings.app_id}-namespaces",
            acks="all",
            enable_idempotence=True,
            request_timeout_ms=self._settings.publish_timeout_ms,
        )
        await self._producer.start()
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap,
            client_id=f"{self._settings.app_id}-namespaces",
            group_id=None,
            enable_auto_commit=False,
            fetch_max_wait_ms=100,
        )
        await self._consumer.start()
        self._consumer.assign([self._partition])
        await self._consumer.seek_to_beginning(self._partition)
        end = (await self._consumer.end_offsets([self._partition]))[self._partition]
        self._task = asyncio.create_task(self._run(), name="flux-namespaces")
        try:
            await self._read_up_to(end, CATCH_UP_TIMEOUT_S)
        except TimeoutError as exc:
            raise RuntimeError(f"could not read the namespaces topic within {CATCH_UP_TIMEOUT_S:.0f} s") from exc
        log.info("namespaces loaded: %d", len(self.registry.all()))

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
                log.warning("namespaces fetch failed: %r", exc)
                await asyncio.sleep(1)
                continue
            for messages in fetched.values():
                for message in messages:
                    try:
                        self.registry.apply(message.key or b"", message.value)
                    except InvalidRecord as exc:
                        log.warning("skipping namespaces record at offset %d: %s", message.offset, exc)
                    self._position = message.offset + 1
            async with self._advanced:
                self._advanced.notify_all()

    async def _read_up_to(self, offset: int, timeout_s: float) -> None:
        """Wait until every record before ``offset`` has been folded."""
        async with self._advanced:
            await asyncio.wait_for(self._advanced.wait_for(lambda: self._position >= offset), timeout_s)

    async def _write(self, key: bytes, value: bytes | None) -> None:
        """Write one record (acks=all) and wait until this process has read it back."""
        assert self._producer is not None, "namespace log not started"
        timeout = self._settings.publish_timeout_ms / 1000
        try:
            sent = await asyncio.wait_for(self._producer.send_and_wait(self._partition.topic, value, key=key), timeout)
            await self._read_up_to(sent.offset + 1, timeout)
        except (KafkaError, TimeoutError) as exc:
            raise PublishFailed(f"the broker did not acknowledge the namespace change: {exc!r}") from exc

    async def register(self, name: str) -> tuple[Namespace, str]:
        """Register ``name``; returns the namespace and its token (shown once, stored only as a hash)."""
        check_name(name)
        async with self._changing:
            if self.registry.holder(name) is not None:
                raise NamespaceTaken(name)
            token = new_token()
            namespace = Namespace(new_namespace_id(), name, int(time.time() * 1000), hash_token(token))
            await self._write(*encode_record(namespace))
            holder = self.registry.holder(name)
            if holder is None or holder.namespace_id != namespace.namespace_id:
                if holder is not None:  # lost a race: restate the winner, so compaction keeps it
                    await self._write(*encode_record(holder))
                raise NamespaceTaken(name)
            return namespace, token

    async def rotate_token(self, name: str) -> tuple[Namespace, str]:
        """Give ``name`` a new token; the old one stops working. Returns the namespace and the token."""
        async with self._changing:
            current = self.registry.holder(name)
            if current is None:
                raise UnknownNamespace(name)
            token = new_token()
            namespace = Namespace(current.namespace_id, name, current.created_at, hash_token(token))
            await self._write(*encode_record(namespace))
            if self.registry.holder(name) != namespace:
                raise UnknownNamespace(name)  # deleted meanwhile
            return namespace, token

    async def delete(self, name: str) -> Namespace:
        """Remove ``name``; its token stops working. Returns what was removed."""
        async with self._changing:
            current = self.registry.holder(name)
            if current is None:
                raise UnknownNamespace(name)
            await self._write(name.encode(), None)
            return current
