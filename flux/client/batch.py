"""Batches cut to the server's limits: :class:`BatchPlan` splits events into requests of at most
``max_events`` events and ``max_bytes`` bytes (``FLUX_MAX_BATCH_EVENTS`` and
``FLUX_MAX_BATCH_BYTES``, whose defaults are :data:`MAX_BATCH_EVENTS` and :data:`MAX_BATCH_BYTES`),
halves a chunk the server still refuses as too large (413: lower limits, or more events than a
namespace may write in a minute), and gathers the per-event results in input order.

Every event gets an ``eventId`` before it is sent (:func:`with_event_id`), so a chunk sent again
is applied once. Each chunk is its own request with its own idempotency key, derived from the call's key: the key
itself for a batch of one chunk, ``KEY.0``, ``KEY.1`` ... for several, and ``.0``/``.1`` more per
halving. The same events under the same key and limits give the same chunks and keys, so a
repeated call is answered, not applied, again.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx
import orjson

from flux.client.errors import error_from_response
from flux.client.exchange import Call
from flux.client.models import BatchItem, BatchResult
from flux.model.ids import new_event_id

MAX_BATCH_EVENTS = 100_000
MAX_BATCH_BYTES = 10_485_760
BATCH_PATH = "/api/events/batch"
EVENT_INDEX = re.compile(r"^events\[(\d+)\]")


def event(
    entity_id: str,
    properties: Mapping[str, Any],
    *,
    stream: str | None = None,
    source: str | None = None,
    timestamp: int | None = None,
    event_id: str | None = None,
) -> dict[str, Any]:
    """An event envelope as the API takes it (docs/api.md#the-event-envelope). A missing ``stream`` or
    ``source`` may come from :meth:`~flux.client.FluxClient.publish_batch`'s defaults; the server fills
    in a missing ``timestamp`` (now), the client a missing ``eventId`` when it sends the event."""
    envelope: dict[str, Any] = {"payload": {"entity_id": entity_id, "properties": dict(properties)}}
    if stream is not None:
        envelope["stream"] = stream
    if source is not None:
        envelope["source"] = source
    if timestamp is not None:
        envelope["timestamp"] = timestamp
    if event_id is not None:
        envelope["eventId"] = event_id
    return envelope


@dataclass(frozen=True)
class BatchLimits:
    """The most events and bytes one batch request may carry."""

    max_events: int = MAX_BATCH_EVENTS
    max_bytes: int = MAX_BATCH_BYTES

    def __post_init__(self) -> None:
        if self.max_events < 1 or self.max_bytes < 3:
            raise ValueError("max_events must be at least 1 and max_bytes at least 3")


@dataclass(frozen=True)
class Chunk:
    """Some events of a batch: their indexes in the input, and the request's idempotency key."""

    indexes: list[int]
    key: str | None


@dataclass(frozen=True)
class ChunkAnswer:
    """A chunk's per-event results (indexes within the chunk), or None: too large, split it."""

    results: list[BatchItem] | None


def with_event_id(envelope: Mapping[str, Any]) -> Mapping[str, Any]:
    """``envelope`` with an ``eventId``: a fresh UUIDv7 if it has none, as the server would give it (and
    increasing within this process, so that ties on the timestamp go in publish order). Every retry
    then carries the same id, and the reducer applies an eventId once."""
    return envelope if envelope.get("eventId") is not None else {**envelope, "eventId": new_event_id()}


def _completed(envelope: Mapping[str, Any], stream: str | None, source: str | None) -> Mapping[str, Any]:
    missing = {name: value for name, value in (("stream", stream), ("source", source)) if value is not None}
    missing = {name: value for name, value in missing.items() if name not in envelope}
    return with_event_id({**envelope, **missing} if missing else envelope)


def _renumbered(match: re.Match[str], indexes: list[int]) -> str:
    """``events[i]`` of a chunk's error as ``events[j]``, ``j`` the event's index in the whole batch."""
    local = int(match[1])
    return f"events[{indexes[local]}]" if local < len(indexes) else match[0]


class BatchPlan:
    """The requests of one batch, and its results as they come (see the module docstring).

    Drive it with ``while (call := plan.next_call()) is not None: plan.take(run(call))``, then
    :meth:`result`.
    """

    def __init__(
        self,
        events: Iterable[Mapping[str, Any]],
        limits: BatchLimits,
        *,
        key: str | None,
        wait: bool,
        stream: str | None = None,
        source: str | None = None,
    ) -> None:
        envelopes = [_completed(e, stream, source) for e in events]
        self._encoded = [orjson.dumps(e) for e in envelopes]
        self._streams = [e.get("stream") if isinstance(e.get("stream"), str) else None for e in envelopes]
        self._results: list[BatchItem | None] = [None] * len(envelopes)
        self._params = {"wait": "true"} if wait else None
        self._current: Chunk | None = None
        chunks = self._cut(limits)
        if len(chunks) == 1:
            self._pending = deque([Chunk(chunks[0], key)])
        else:
            self._pending = deque(Chunk(c, None if key is None else f"{key}.{i}") for i, c in enumerate(chunks))

    def _cut(self, limits: BatchLimits) -> list[list[int]]:
        """Indexes in chunks within the limits; an event too large for any chunk fails here."""
        chunks: list[list[int]] = []
        chunk: list[int] = []
        size = 2  # the brackets of the JSON array
        for index, encoded in enumerate(self._encoded):
            if len(encoded) + 2 > limits.max_bytes:
                self._results[index] = BatchItem(
                    None,
                    self._streams[index],
                    f"events[{index}]: {len(encoded):,} bytes, more than a batch may hold "
                    f"({limits.max_bytes:,} bytes, FLUX_MAX_BATCH_BYTES)",
                )
                continue
            grown = size + len(encoded) + (1 if chunk else 0)
            if chunk and (len(chunk) == limits.max_events or grown > limits.max_bytes):
                chunks.append(chunk)
                chunk, grown = [], 2 + len(encoded)
            chunk.append(index)
            size = grown
        if chunk:
            chunks.append(chunk)
        return chunks

    def next_call(self) -> Call[ChunkAnswer] | None:
        """The request of the next chunk, or None when every chunk is answered."""
        if not self._pending:
            return None
        chunk = self._current = self._pending.popleft()
        body = b"[" + b",".join(self._encoded[i] for i in chunk.indexes) + b"]"

        def decode(response: httpx.Response) -> ChunkAnswer:
            return self._decode(response, len(chunk.indexes))

        return Call(
            "POST",
            BATCH_PATH,
            decode,
            params=self._params,
            body=body,
            key=chunk.key,
            accept=frozenset({400, 403, 413}),
        )

    @staticmethod
    def _decode(response: httpx.Response, size: int) -> ChunkAnswer:
        if response.status_code == 413 and size > 1:
            return ChunkAnswer(None)
        try:
            body = response.json()
        except ValueError:
            body = None
        results = body.get("results") if isinstance(body, dict) else None
        if isinstance(results, list) and len(results) == size:
            return ChunkAnswer([BatchItem.from_json(r) for r in results])
        error = error_from_response(response)
        if response.status_code == 413:  # one event the server will not take in a batch
            return ChunkAnswer([BatchItem(None, None, f"events[0]: {error.message}")])
        raise error

    def take(self, answer: ChunkAnswer) -> None:
        """Record the answer to the call :meth:`next_call` gave last."""
        chunk = self._current
        assert chunk is not None, "take() without next_call()"
        self._current = None
        if answer.results is None:
            middle = len(chunk.indexes) // 2
            halves = [chunk.indexes[:middle], chunk.indexes[middle:]]
            keys = [None, None] if chunk.key is None else [f"{chunk.key}.0", f"{chunk.key}.1"]
            self._pending.extendleft(reversed([Chunk(h, k) for h, k in zip(halves, keys, strict=True)]))
            return
        for local, item in enumerate(answer.results):
            index = chunk.indexes[local]
            error = item.error
            if error is not None:
                error = EVENT_INDEX.sub(lambda m: _renumbered(m, chunk.indexes), error)
            self._results[index] = BatchItem(item.event_id, item.stream or self._streams[index], error)

    def result(self) -> BatchResult:
        """Every event's outcome in input order, with the counts."""
        items = [item for item in self._results if item is not None]
        assert len(items) == len(self._results), "result() before every chunk was answered"
        successful = sum(1 for item in items if item.ok)
        return BatchResult(successful, len(items) - successful, items)
