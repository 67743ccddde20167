"""No source offset is committed past a changelog write that failed (no Kafka: a fake producer).

aiokafka's ``flush()`` returns normally when a send failed, so Faust's flush-then-commit would
commit the offsets of a batch whose state never reached the changelog. The worker's consumer asks
the entity store first (agents.transport, agents.table.store).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import rocksdict
from aiokafka.errors import MessageSizeTooLargeError

from agents.table.store import EntityStore
from agents.transport import ReadCommittedConsumer


class FakeBatch:
    def append(self, key: bytes, value: bytes, timestamp: Any) -> object:
        return object()  # every record fits


class FakeProducer:
    """aiokafka's producer as the store uses it: each batch sent gets a future the test settles."""

    def __init__(self) -> None:
        self.futures: list[asyncio.Future[Any]] = []

    def _ensure_producer(self) -> FakeProducer:
        return self

    def create_batch(self) -> FakeBatch:
        return FakeBatch()

    async def send_batch(self, builder: FakeBatch, topic: str, partition: int) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.futures.append(future)
        return future


class FakeApp:
    """The Faust app's parts the store and the consumer's commit touch; ``crash`` records the reason."""

    commit_guard: Any = None

    def __init__(self, db: rocksdict.Rdict) -> None:
        self.producer = FakeProducer()
        self.loop = asyncio.get_running_loop()
        self.crashes: list[BaseException] = []
        self.board = None

    async def crash(self, reason: BaseException) -> None:
        self.crashes.append(reason)


class FakeThread:
    def __init__(self) -> None:
        self.commits: list[dict[Any, int]] = []

    async def commit(self, offsets: dict[Any, int]) -> bool:
        self.commits.append(dict(offsets))
        return True


def _setup(tmp_path: Path) -> tuple[FakeApp, EntityStore, ReadCommittedConsumer, FakeThread]:
    db = rocksdict.Rdict(str(tmp_path / "p0"), options=rocksdict.Options(raw_mode=True))
    app = FakeApp(db)
    data = SimpleNamespace(_db_for_partition=lambda partition: db, _dbs={0: db})
    table = SimpleNamespace(changelog_topic=SimpleNamespace(get_topic_name=lambda: "t-entities-changelog"), data=data)
    store = EntityStore(app, table, 1)
    consumer = ReadCommittedConsumer.__new__(ReadCommittedConsumer)  # only app and _thread are used by _commit
    thread = FakeThread()
    consumer.app = app  # type: ignore[assignment]
    consumer._thread = thread  # type: ignore[assignment]
    return app, store, consumer, thread


async def _write(store: EntityStore, applied: int) -> None:
    await store.write(0, {b"acme/big": (b'{"p":{}}', 1)}, applied, 1)


async def test_a_failed_changelog_send_stops_the_worker_and_the_commit_does_not_happen(tmp_path: Path) -> None:
    app, store, consumer, thread = _setup(tmp_path)
    assert app.commit_guard == store.changelog_written  # the store registered itself with the app
    await _write(store, 10)
    for future in app.producer.futures:  # the broker refuses the record: flush() would still return
        future.set_exception(MessageSizeTooLargeError("the record is larger than max.message.bytes"))
    assert await consumer._commit({"events-0": 10}) is False
    assert thread.commits == []
    await asyncio.sleep(0)  # the crash the store scheduled
    assert app.crashes and "changelog write failed" in str(app.crashes[0])
    assert await consumer._commit({"events-0": 10}) is False  # nor later, while the worker stops
    assert thread.commits == []


async def test_the_commit_waits_for_sends_in_flight_and_sees_their_failure(tmp_path: Path) -> None:
    app, store, consumer, thread = _setup(tmp_path)
    await _write(store, 10)
    commit = asyncio.create_task(consumer._commit({"events-0": 10}))
    await asyncio.sleep(0.01)
    assert not commit.done()  # the send is not acknowledged yet
    app.producer.futures[0].set_exception(MessageSizeTooLargeError("too large"))
    assert await commit is False and thread.commits == []


async def test_a_cancelled_send_is_not_committed_past_either(tmp_path: Path) -> None:
    app, store, consumer, thread = _setup(tmp_path)
    await _write(store, 10)
    app.producer.futures[0].cancel()
    assert await consumer._commit({"events-0": 10}) is False and thread.commits == []


async def test_acknowledged_sends_let_the_commit_through(tmp_path: Path) -> None:
    app, store, consumer, thread = _setup(tmp_path)
    await _write(store, 10)
    for future in app.producer.futures:
        future.set_result(SimpleNamespace(offset=7))
    assert await consumer._commit({"events-0": 10}) is True
    assert thread.commits == [{"events-0": 10}] and app.crashes == []
    await asyncio.sleep(0)
    assert store.db(0).get(b"__faust\0offset__") == b"7"  # the persisted changelog offset
