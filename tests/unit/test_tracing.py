"""OpenTelemetry tracing (flux.tracing) on fakes, with the SDK's in-memory exporter: a publish is a span
naming its events and where they landed, its records carry its traceparent, and the fold of those records
is a span linked to it; with FLUX_OTEL_ENABLED off, no span and no header."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
from aiokafka.structs import RecordMetadata
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from agents.reducer_agent import BatchReducer
from flux import tracing as flux_tracing
from flux.config import Settings
from flux.kafka.publisher import EventPublisher
from flux.metrics import Metrics
from flux.model.partitioning import partition_for
from flux.tracing import HEADER, MAX_EVENT_IDS, MAX_LINKS, Tracing, traceparent, traceparents_of

PARTITIONS = 4
SETTINGS = Settings(partitions=PARTITIONS)


class Producer:
    """Both producers of the publisher: sends recorded with their headers, acknowledged at once."""

    def __init__(self) -> None:
        self.sent: list[tuple[int, Any, Any]] = []  # partition, value, headers
        self.offsets = [0] * PARTITIONS

    async def send(self, topic: str, value: bytes, key: bytes | None = None, partition: int = 0, **kw: Any) -> Any:
        self.sent.append((partition, orjson.loads(value), kw.get("headers", "absent")))
        future: asyncio.Future[RecordMetadata] = asyncio.get_running_loop().create_future()
        future.set_result(RecordMetadata("t", partition, None, self.offsets[partition], 0, 0, 0))
        self.offsets[partition] += 1
        return future

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        yield


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    memory = InMemorySpanExporter()
    yield memory
    memory.clear()


def tracing_to(exporter: InMemorySpanExporter) -> Tracing:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return Tracing(provider.get_tracer("test"))


def event(entity: str, n: int = 0, stream: str = "s") -> dict[str, Any]:
    return {
        "eventId": f"{entity}-{n}",
        "stream": stream,
        "source": "test",
        "timestamp": 1_700_000_000_000 + n,
        "payload": {"entity_id": entity, "properties": {"n": n}},
    }


def started(producer: Producer, tracing: Tracing | None) -> EventPublisher:
    publisher = EventPublisher(SETTINGS, transactional_id="t", tracing=tracing)
    publisher._producer = publisher._txn_producer = producer  # type: ignore[assignment]
    publisher._sender = asyncio.create_task(publisher._send_loop())
    publisher._committer = asyncio.create_task(publisher._commit_loop())
    return publisher


def spans(exporter: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    return [span for span in exporter.get_finished_spans() if span.name == name]


def traceparent_of(span: ReadableSpan) -> str:
    context = span.get_span_context()
    assert context is not None
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"


async def test_a_publish_is_a_span_with_its_event_and_where_it_landed(exporter: InMemorySpanExporter) -> None:
    producer = Producer()
    publisher = started(producer, tracing_to(exporter))
    offsets = await publisher.publish(event("a"))  # type: ignore[arg-type]
    await publisher.stop()
    [span] = spans(exporter, "flux.publish")
    attributes = dict(span.attributes or {})
    partition = partition_for("a", PARTITIONS)
    assert offsets == {partition: 0}
    assert attributes["flux.event_ids"] == ("a-0",)
    assert attributes["flux.event_count"] == 1 and attributes["flux.stream"] == "s"
    assert attributes["flux.partitions"] == (partition,) and attributes["flux.offsets"] == (0,)
    assert attributes["messaging.destination.partition.id"] == str(partition)
    assert attributes["messaging.kafka.offset"] == 0
    [(_, value, headers)] = producer.sent
    assert value["eventId"] == "a-0"
    assert headers == [(HEADER, traceparent_of(span).encode())]


async def test_coalesced_publishes_share_a_record_that_names_each_of_them(exporter: InMemorySpanExporter) -> None:
    producer = Producer()
    publisher = started(producer, tracing_to(exporter))
    await asyncio.gather(*(publisher.publish(event("a", n)) for n in range(3)))  # type: ignore[arg-type]
    await publisher.stop()
    published = spans(exporter, "flux.publish")
    assert len(published) == 3
    named = [part for _, _, headers in producer.sent for part in traceparents_of(headers)]
    assert sorted(named) == sorted(traceparent_of(span) for span in published)
    assert len(producer.sent) < 3  # at least two of them went out in one packed record


async def test_a_batch_is_one_span_named_on_every_record_of_the_batch(exporter: InMemorySpanExporter) -> None:
    producer = Producer()
    publisher = started(producer, tracing_to(exporter))
    batch = [event(f"e{n}", n, stream="t" if n % 2 else "s") for n in range(MAX_EVENT_IDS + 8)]
    offsets = await publisher.publish_batch(batch)  # type: ignore[arg-type]
    await publisher.stop()
    [span] = spans(exporter, "flux.publish")
    attributes = dict(span.attributes or {})
    assert attributes["flux.event_count"] == len(batch)
    assert attributes["flux.event_ids"] == tuple(e["eventId"] for e in batch[:MAX_EVENT_IDS])  # capped
    assert attributes["flux.stream"] == ("s", "t")
    assert dict(zip(attributes["flux.partitions"], attributes["flux.offsets"], strict=True)) == offsets  # type: ignore[arg-type]
    assert len(producer.sent) > 1
    assert all(headers == [(HEADER, traceparent_of(span).encode())] for _, _, headers in producer.sent)


def test_the_header_round_trips_to_a_link_to_the_publish_span(exporter: InMemorySpanExporter) -> None:
    tracer = tracing_to(exporter)
    with tracer.publishing([event("a"), event("b")], "flux.events") as first:  # type: ignore[list-item]
        pass
    with tracer.publishing([event("c")], "flux.events") as second:  # type: ignore[list-item]
        pass
    headers = Tracing.headers([first.traceparent, None, second.traceparent, first.traceparent])
    assert headers == [(HEADER, f"{first.traceparent},{second.traceparent}".encode())]
    assert traceparents_of(headers) == [first.traceparent, second.traceparent]
    assert traceparents_of({HEADER: headers[0][1]}) == [first.traceparent, second.traceparent]  # a mapping too
    assert traceparents_of([("traceparent", first.traceparent.encode())]) == [first.traceparent]
    assert traceparents_of(None) == [] and Tracing.headers([None]) is None
    assert traceparent(first.span) == first.traceparent


class Store:
    def __init__(self) -> None:
        self.values: dict[bytes, bytes] = {}

    def load(self, partition: int, key: bytes) -> bytes | None:
        return self.values.get(key)

    async def write(self, partition: int, states: Any, applied: int, events: int, history: Any, seen: Any) -> Any:
        self.values.update({key: value for key, (value, _) in states.items()})
        return SimpleNamespace(events=events, entities=len(states))


class Feed:
    async def publish(self, record: Any) -> None:
        return None


class Fence:
    async def check(self) -> None:
        return None


def reducer_with(tracing: Tracing | None, settings: Settings = SETTINGS) -> BatchReducer:
    app = SimpleNamespace(producer=None)
    return BatchReducer(app, Store(), Feed(), settings, Metrics(), Fence(), tracing=tracing)  # type: ignore[arg-type]


def as_records(sent: list[tuple[int, Any, Any]]) -> list[Any]:
    """What the reducer agent reads back: Faust events over the records the publisher sent."""
    return [
        SimpleNamespace(
            message=SimpleNamespace(
                value=orjson.dumps(value),
                topic="flux.events",
                partition=partition,
                offset=offset,
                timestamp=1.0,
                headers=None if headers == "absent" else headers,
            )
        )
        for offset, (partition, value, headers) in enumerate(sent)
    ]


async def test_the_fold_is_a_span_per_partition_linked_to_the_publishes_it_applied(
    exporter: InMemorySpanExporter,
) -> None:
    tracing = tracing_to(exporter)
    producer = Producer()
    publisher = started(producer, tracing)
    await asyncio.gather(*(publisher.publish(event(entity)) for entity in "abcdefgh"))  # type: ignore[arg-type]
    await publisher.publish_batch([event("x", 1), event("y", 1)])  # type: ignore[list-item]
    await publisher.stop()
    external = (partition_for("z", PARTITIONS), event("z"), "absent")  # another producer's record: no header
    records = as_records([*producer.sent, external])
    applied = await reducer_with(tracing).apply(records)
    assert applied == 11
    folds = spans(exporter, "flux.fold")
    assert sorted(dict(span.attributes or {})["flux.partition"] for span in folds) == sorted(
        {record.message.partition for record in records}
    )
    linked = {link.context.span_id for span in folds for link in span.links}
    published = {span.get_span_context().span_id for span in spans(exporter, "flux.publish")}  # type: ignore[union-attr]
    assert linked == published and len(published) == 9
    z_partition = external[0]
    [z_fold] = [span for span in folds if dict(span.attributes or {})["flux.partition"] == z_partition]
    z_publishes = {
        part
        for record in records
        if record.message.partition == z_partition
        for part in traceparents_of(record.message.headers)
    }
    assert len(z_fold.links) == len(z_publishes)  # the external record added none


async def test_a_fold_links_to_a_bounded_number_of_publishes(exporter: InMemorySpanExporter) -> None:
    tracing = tracing_to(exporter)
    parents = [f"00-{n + 1:032x}-{n + 1:016x}-01" for n in range(MAX_LINKS + 10)]
    records = as_records([(0, event(f"e{n}"), [(HEADER, parent.encode())]) for n, parent in enumerate(parents)])
    settings = Settings(partitions=1)
    await reducer_with(tracing, settings).apply(records)
    [fold] = spans(exporter, "flux.fold")
    assert len(fold.links) == MAX_LINKS


async def test_a_failed_fold_is_an_error_span(exporter: InMemorySpanExporter) -> None:
    class Broken(Store):
        async def write(self, *_: Any) -> Any:
            raise RuntimeError("disk full")

    reducer = BatchReducer(
        SimpleNamespace(producer=None),
        Broken(),
        Feed(),
        SETTINGS,
        Metrics(),
        Fence(),
        tracing=tracing_to(exporter),  # type: ignore[arg-type]
    )
    with pytest.raises(RuntimeError):
        await reducer.apply(as_records([(0, event("a"), "absent")]))
    [fold] = spans(exporter, "flux.fold")
    assert not fold.status.is_ok and fold.events[0].name == "exception"


async def test_off_no_span_and_no_header(exporter: InMemorySpanExporter) -> None:
    producer = Producer()
    publisher = started(producer, None)  # from the settings: FLUX_OTEL_ENABLED is off by default
    assert publisher._tracing is None and flux_tracing.tracing_for(SETTINGS) is None
    await publisher.publish(event("a"))  # type: ignore[arg-type]
    await publisher.publish_batch([event("b"), event("c")])  # type: ignore[list-item]
    await publisher.stop()
    assert {headers for _, _, headers in producer.sent} <= {"absent", None}  # as before tracing existed
    reducer = reducer_with(None)
    assert reducer._tracing is None
    await reducer.apply(as_records(producer.sent))
    assert exporter.get_finished_spans() == ()


def test_off_the_sdk_is_not_even_imported() -> None:
    code = (
        "import sys; from flux.config import Settings; from api.server import build_node; "
        "import flux.kafka.publisher as p; p.EventPublisher(Settings(), 't'); "
        "assert not [m for m in sys.modules if m.startswith('opentelemetry.sdk')], 'imported'"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    env.pop("FLUX_OTEL_ENABLED", None)
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=60)


def test_on_the_sdk_is_set_up_once_from_the_otel_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")
    monkeypatch.setattr(flux_tracing, "_process_tracing", None)
    first = flux_tracing.tracing_for(Settings(otel_enabled=True))
    assert first is not None and flux_tracing.tracing_for(Settings(otel_enabled=True)) is first
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "zipkin")
    with pytest.raises(ValueError, match="zipkin"):
        flux_tracing._sdk_provider()
