"""Single events are coalesced: while a send is in flight, concurrent events go out together, packed
by partition, and each request is answered with the fate of the record holding its event."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest
from aiokafka.structs import RecordMetadata

from flux.config import Settings
from flux.kafka.publisher import EventPublisher, PublishFailed
from flux.model.partitioning import partition_for

PARTITIONS = 4


class Producer:
    """A producer whose sends the test acknowledges (or fails) when it likes."""

    def __init__(self) -> None:
        self.sent: list[tuple[int, Any, bytes | None, asyncio.Future[RecordMetadata]]] = []
        self.offsets = [0] * PARTITIONS
        self.refuse: set[int] = set()  # partitions whose records fail

    async def send(self, topic: str, value: bytes, key: bytes | None = None, partition: int = 0) -> Any:
        future: asyncio.Future[RecordMetadata] = asyncio.get_running_loop().create_future()
        self.sent.append((partition, orjson.loads(value), key, future))
        return future

    def acknowledge(self) -> None:
        """Settle every record sent so far: an offset each, or an error for refused partitions."""
        for partition, _, _, future in self.sent:
            if future.done():
                continue
            if partition in self.refuse:
                future.set_exception(RuntimeError("NotEnoughReplicas"))
                continue
            offset = self.offsets[partition]
            self.offsets[partition] += 1
            future.set_result(RecordMetadata("t", partition, None, offset, 0, 0, 0))


def event(entity: str, n: int = 0) -> dict[str, Any]:
    return {
        "eventId": f"{entity}-{n}",
        "stream": "s",
        "source": "test",
        "timestamp": 1_700_000_000_000 + n,
        "payload": {"entity_id": entity, "properties": {"n": n}},
    }


async def started(producer: Producer) -> EventPublisher:
    publisher = EventPublisher(Settings(partitions=PARTITIONS), transactional_id="t")
    publisher._producer = producer  # type: ignore[assignment]
    publisher._sender = asyncio.create_task(publisher._send_loop())
    return publisher


async def settle(producer: Producer, rounds: int = 5) -> None:
    for _ in range(rounds):
        await asyncio.sleep(0)
        producer.acknowledge()


def test_an_event_alone_is_one_record_keyed_by_its_entity() -> None:
    async def run() -> None:
        producer = Producer()
        publisher = await started(producer)
        answer = asyncio.create_task(publisher.publish(event("a")))
        await settle(producer)
        partition = partition_for("a", PARTITIONS)
        assert await answer == {partition: 0}
        [(sent_partition, value, key, _)] = producer.sent
        assert (sent_partition, value["eventId"], key) == (partition, "a-0", b"a")
        await publisher.stop()

    asyncio.run(run())


def test_events_arriving_during_a_send_go_out_together_one_packed_record_per_partition() -> None:
    async def run() -> None:
        producer = Producer()
        publisher = await started(producer)
        first = asyncio.create_task(publisher.publish(event("first")))
        await asyncio.sleep(0)  # the first event's record is now in flight, unacknowledged
        await asyncio.sleep(0)
        ids = [f"e{i}" for i in range(40)]
        others = [asyncio.create_task(publisher.publish(event(i, n))) for n, i in enumerate(ids)]
        await asyncio.sleep(0)
        assert len(producer.sent) == 1, "nothing more is sent while the first record is in flight"
        await settle(producer)
        await first
        answers = await asyncio.gather(*others)
        rest = producer.sent[1:]
        partitions = {partition_for(i, PARTITIONS) for i in ids}
        assert len(rest) == len(partitions), "one record per partition for the 40 events"
        for partition, value, key, _ in rest:
            assert key is None and isinstance(value, list)
            assert [e["payload"]["entity_id"] for e in value] == [
                i for i in ids if partition_for(i, PARTITIONS) == partition
            ]
        for entity, answer in zip(ids, answers, strict=True):
            assert list(answer) == [partition_for(entity, PARTITIONS)]
        await publisher.stop()

    asyncio.run(run())


def test_a_record_the_broker_refuses_fails_only_its_own_events() -> None:
    async def run() -> None:
        producer = Producer()
        publisher = await started(producer)
        refused = partition_for("x", PARTITIONS)
        producer.refuse.add(refused)
        other = next(e for e in (f"y{i}" for i in range(100)) if partition_for(e, PARTITIONS) != refused)
        answers = asyncio.gather(publisher.publish(event("x")), publisher.publish(event(other)), return_exceptions=True)
        await settle(producer)
        bad, good = await answers
        assert isinstance(bad, PublishFailed) and "NotEnoughReplicas" in str(bad)
        assert good == {partition_for(other, PARTITIONS): 0}
        await publisher.stop()

    asyncio.run(run())


@pytest.mark.parametrize("in_flight", [False, True])
def test_events_still_waiting_at_shutdown_fail_at_once_instead_of_hanging(in_flight: bool) -> None:
    async def run() -> None:
        producer = Producer()
        publisher = await started(producer)
        waiting = asyncio.create_task(publisher.publish(event("a")))
        await asyncio.sleep(0)
        if in_flight:
            await asyncio.sleep(0)
            assert len(producer.sent) == 1  # sent, never acknowledged
        await publisher.stop()
        with pytest.raises(PublishFailed, match="shutting down"):
            await asyncio.wait_for(waiting, 1)

    asyncio.run(run())
