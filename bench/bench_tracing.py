"""Micro-benchmark of tracing's cost (flux.tracing): the publisher's single-event publish and
``BatchReducer.apply`` on in-process fakes (no broker, no disk), tracing off and on.

- ``publish``: 200 concurrent single events per round (they coalesce into packed records, as under
  load), a fake producer acknowledging at once; microseconds per event.
- ``apply``: a batch of 5,000 records of one event each over 4 partitions, on a dict store;
  microseconds per event.

"on" exports to nowhere (an SDK tracer provider with a batch processor over an exporter that drops
the spans): the cost of making the spans and headers, not of shipping them. Run from the tree to
measure (``PYTHONPATH=. python bench/bench_tracing.py``); on a tree without :mod:`flux.tracing` it
measures "off" only, for a before/after comparison. Each figure is the best of ``--repeat`` runs.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

import orjson
from aiokafka.structs import RecordMetadata

from agents.reducer_agent import BatchReducer
from flux.config import Settings
from flux.kafka.publisher import EventPublisher
from flux.metrics import Metrics
from flux.model.partitioning import partition_for

PARTITIONS = 4
SETTINGS = Settings(partitions=PARTITIONS)


class Producer:
    def __init__(self) -> None:
        self.offsets = [0] * PARTITIONS

    async def send(self, topic: str, value: bytes, key: bytes | None = None, partition: int = 0, **_: Any) -> Any:
        future: asyncio.Future[RecordMetadata] = asyncio.get_running_loop().create_future()
        future.set_result(RecordMetadata(topic, partition, None, self.offsets[partition], 0, 0, 0))
        self.offsets[partition] += 1
        return future


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


def event(n: int) -> dict[str, Any]:
    return {
        "eventId": f"e-{n}",
        "stream": "s",
        "source": "bench",
        "timestamp": 1_700_000_000_000 + n,
        "payload": {"entity_id": f"entity-{n % 1000}", "properties": {"n": n}},
    }


def tracing_on() -> Any:
    try:
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

        from flux.tracing import Tracing
    except ImportError:
        return None

    class Nowhere(SpanExporter):
        def export(self, spans: Sequence[Any]) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(Nowhere()))
    return Tracing(provider.get_tracer("bench"))


def with_tracing(kwargs: dict[str, Any], tracing: Any) -> dict[str, Any]:
    return {**kwargs, "tracing": tracing} if tracing is not None else kwargs


async def bench_publish(tracing: Any, rounds: int, per_round: int = 200) -> float:
    publisher = EventPublisher(SETTINGS, **with_tracing({"transactional_id": "t"}, tracing))
    publisher._producer = Producer()  # type: ignore[assignment]
    publisher._sender = asyncio.create_task(publisher._send_loop())
    events = [event(n) for n in range(per_round)]
    started = time.perf_counter()
    for _ in range(rounds):
        await asyncio.gather(*(publisher.publish(e) for e in events))  # type: ignore[arg-type]
    elapsed = time.perf_counter() - started
    await publisher.stop()
    return elapsed / (rounds * per_round) * 1e6


async def bench_apply(tracing: Any, batches: int, size: int = 5000) -> float:
    app = SimpleNamespace(producer=None)
    reducer = BatchReducer(app, Store(), Feed(), SETTINGS, Metrics(), Fence(), **with_tracing({}, tracing))  # type: ignore[arg-type]
    header = [("flux-trace", b"00-0123456789abcdef0123456789abcdef-0123456789abcdef-01")] if tracing else None
    total = 0.0
    for b in range(batches):
        records = [
            SimpleNamespace(
                message=SimpleNamespace(
                    value=orjson.dumps(event(b * size + n)),
                    topic="flux.events",
                    partition=partition_for(f"entity-{(b * size + n) % 1000}", PARTITIONS),
                    offset=b * size + n,
                    timestamp=1.0,
                    headers=header,
                )
            )
            for n in range(size)
        ]
        started = time.perf_counter()
        await reducer.apply(records)
        total += time.perf_counter() - started
    return total / (batches * size) * 1e6


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    on = tracing_on()
    modes = [("off", None), ("on", on)] if on is not None else [("off", None)]
    for name, tracing in modes:
        publish = min([await bench_publish(tracing, 50) for _ in range(args.repeat)])
        apply = min([await bench_apply(tracing, 4) for _ in range(args.repeat)])
        print(f"tracing {name}: publish {publish:.2f} us/event, apply {apply:.2f} us/event")


if __name__ == "__main__":
    asyncio.run(main())
