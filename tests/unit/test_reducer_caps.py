"""The reducer agent under the entity caps, on fakes (no Kafka): refused events go to the dead-letter topic
with the reason and are counted, everything else in the batch folds, and a replay's fold agrees."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import orjson
import rocksdict

from agents.reducer_agent import BatchReducer
from agents.replay.shadow_store import ShadowPartition, open_shadow
from agents.table.store import PartitionStats
from flux.config import Settings
from flux.metrics import Metrics

SETTINGS = Settings(partitions=1, max_entity_properties=3, max_entity_bytes=2_048)


class Store:
    """The entity store as the reducer uses it: a dict of values, writes recorded."""

    def __init__(self) -> None:
        self.values: dict[bytes, bytes] = {}

    def load(self, partition: int, key: bytes) -> bytes | None:
        return self.values.get(key)

    async def write(self, partition: int, states: dict[bytes, tuple[bytes, int]], applied: int, events: int,
                    history: Any, seen: dict[bytes, int]) -> PartitionStats:  # fmt: skip
        self.values.update({key: value for key, (value, _) in states.items()})
        self.values.update({mark: str(offset).encode() for mark, offset in seen.items()})
        return PartitionStats(events, len(states))


class Producer:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes]] = []

    async def send(self, topic: str, key: Any, value: bytes, partition: int, *_: Any) -> asyncio.Future[Any]:
        self.sent.append((topic, value))
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        future.set_result(None)
        return future


class Feed:
    def __init__(self) -> None:
        self.records: list[Any] = []

    async def publish(self, record: Any) -> None:
        self.records.append(record)


class Fence:
    async def check(self) -> None:
        return None


def event(entity: str, eid: str, ts: int, **properties: Any) -> dict[str, Any]:
    return {
        "stream": "s",
        "source": "t",
        "eventId": eid,
        "timestamp": ts,
        "payload": {"entity_id": entity, "properties": properties},
    }


def records(values: list[Any], start: int = 0) -> list[Any]:
    return [
        SimpleNamespace(
            message=SimpleNamespace(value=orjson.dumps(v), topic="flux.events", partition=0, offset=i, timestamp=1.0)
        )
        for i, v in enumerate(values, start)
    ]


LOG = [
    event("a", "1", 1, x=1, y=2),
    [event("a", "2", 2, z=3, w=4), event("b", "3", 3, big="x" * 1_000)],  # packed: a would get 4 properties
    event("a", "4", 4, z=5),
    event("b", "5", 5, big2="y" * 1_500),  # b would take more than 2,048 bytes
    event("c", "6", 6, alone="z" * 3_000),  # on its own too large: a publisher writing straight to Kafka
    event("b", "7", 7, big="short"),
]


async def test_refused_events_go_to_the_dead_letter_topic_and_the_rest_of_the_batch_folds() -> None:
    store, producer, feed, metrics = Store(), Producer(), Feed(), Metrics()
    app = SimpleNamespace(producer=producer)
    reducer = BatchReducer(app, store, feed, SETTINGS, metrics, Fence())  # type: ignore[arg-type]
    applied = await reducer.apply(records(LOG))
    assert applied == 4
    assert metrics.events_applied == 4 and metrics.events_rejected == 3
    a, b = orjson.loads(store.values[b"a"]), orjson.loads(store.values[b"b"])
    assert a["p"] == {"x": 1, "y": 2, "z": 5} and b["p"] == {"big": "short"}
    assert b"c" not in store.values  # an entity only refused events touched is not written
    dead = [orjson.loads(value) for topic, value in producer.sent if topic == SETTINGS.dead_letter_topic]
    assert [(d["offset"], d["value"]["eventId"]) for d in dead] == [(1, "2"), (3, "5"), (4, "6")]
    assert dead[0]["reason"] == "entity 'a' would have 4 properties; the limit is 3 (FLUX_MAX_ENTITY_PROPERTIES)"
    assert "entity 'b' would take" in dead[1]["reason"] and "(FLUX_MAX_ENTITY_BYTES)" in dead[1]["reason"]
    assert dead[0]["topic"] == "flux.events" and dead[0]["partition"] == 0
    assert not any(mark.endswith(b"2") for mark in store.values if mark.startswith(b"__flux"))  # not marked

    # The same records read again (after a crash before the commit): b has room for event 5 now, but
    # the log's order refused it, and it stays refused; nothing is applied twice.
    again = await reducer.apply(records(LOG))
    # Only c, which has no stored state to say how far it was folded, has its refusal sent again.
    assert again == 0 and metrics.events_rejected == 4
    assert orjson.loads(store.values[b"a"])["p"] == a["p"] and orjson.loads(store.values[b"b"])["p"] == b["p"]


async def test_a_replay_folds_the_log_to_the_same_states(tmp_path: Path) -> None:
    live = Store()
    reducer = BatchReducer(SimpleNamespace(producer=Producer()), live, Feed(), SETTINGS, Metrics(), Fence())  # type: ignore[arg-type]
    for offset, value in enumerate(LOG):  # one record per batch this time
        await reducer.apply(records([value], offset))
    shadow = ShadowPartition(open_shadow(tmp_path / "p0"), SETTINGS)
    messages = [
        SimpleNamespace(value=orjson.dumps(v), topic="flux.events", partition=0, offset=i, timestamp=1000, key=None)
        for i, v in enumerate(LOG)
    ]
    assert shadow.fold(messages[:3]) + shadow.fold(messages[3:]) == 4
    for key in (b"a", b"b"):
        stored = orjson.loads(live.values[key])
        stored.pop("o")
        assert orjson.loads(shadow.db[key]) == stored
    assert shadow.db.get(b"c") is None
    shadow.db.close()
    rocksdict.Rdict.destroy(str(tmp_path / "p0"))
