"""``X-Idempotency-Key`` on the publish endpoints: replay the first answer, refuse a reused key.

What is kept of a batch answer is what its body cannot give again: the counts, the seed of its
derived eventIds and the failed events' results (:func:`compact_batch`); a replay rebuilds the
rest from the retried body, which is the same (its hash is compared first). So a batch of 100,000
events that all succeeded is remembered in about a hundred bytes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from fastapi import Header, Request

from api.auth import Caller
from api.errors import ApiError
from api.responses import JSON
from flux.kafka.idempotency import (
    MAX_KEY_LENGTH,
    IdempotencyLog,
    KeyReused,
    body_hash,
    event_id_for,
    record_key,
    request_seed,
)
from flux.kafka.publisher import PublishFailed

log = logging.getLogger(__name__)

HEADER = "x-idempotency-key"
REPLAYED = {"Idempotent-Replayed": "true"}
IDEMPOTENCY_HEADER = Header(
    None,
    alias="X-Idempotency-Key",
    min_length=1,
    max_length=MAX_KEY_LENGTH,
    description="Retry safely: the same key and body within FLUX_IDEMPOTENCY_TTL_S answer the first answer again "
    "(Idempotent-Replayed: true); the same key with another body is 422",
)


@dataclass(frozen=True)
class Keyed:
    """A request that carries an idempotency key: where its answer is kept, its body's hash, and
    the seed of the eventIds derived for its events (:func:`flux.kafka.idempotency.request_seed`)."""

    key: str
    scope: str
    where: bytes
    digest: str
    seed: str

    def fill_event_ids(self, events: list[Any]) -> list[Any]:
        """``events`` with an eventId derived from the request on each object that has none."""
        return [
            {**event, "eventId": event_id_for(self.seed, index)}
            if isinstance(event, dict) and event.get("eventId") is None
            else event
            for index, event in enumerate(events)
        ]


def check_key(
    request: Request, idempotency: IdempotencyLog, caller: Caller, body: Any
) -> tuple[Keyed | None, JSON | None]:
    """The request's key (None without the header) and, for a retry, the first answer again
    (``Idempotent-Replayed: true``); 422 when the key was used with another body."""
    key = request.headers.get(HEADER)
    if key is None:
        return None, None
    scope = caller.scope()
    path = request.url.path
    digest = body_hash(body)
    keyed_request = Keyed(
        key, scope, record_key(scope, key, path), digest, request_seed(scope, path, key, digest, idempotency.period())
    )
    try:
        found = idempotency.lookup(keyed_request.where, keyed_request.digest)
    except KeyReused as exc:
        raise ApiError(
            422,
            "X-Idempotency-Key was already used with a different body; use a new key for a new request",
        ) from exc
    if found is None:
        return keyed_request, None
    answer = found.answer
    if isinstance(answer, dict) and "seed" in answer:
        answer = expand_batch(answer, _events_of(body))
    return keyed_request, JSON(answer, status_code=found.status, headers=REPLAYED)


def _events_of(body: Any) -> list[Any]:
    """The events of a batch body the route accepted (``{"events": [...]}`` or an array)."""
    events = body["events"] if isinstance(body, dict) else body
    return events if isinstance(events, list) else []


def compact_batch(answer: dict[str, Any], seed: str) -> dict[str, Any]:
    """What to keep of a batch answer: its counts, the seed of its derived eventIds, and the
    results of the failed events with their indexes (the others follow from the body)."""
    errors = [[i, r["stream"], r["error"]] for i, r in enumerate(answer["results"]) if r["error"] is not None]
    return {"successful": answer["successful"], "failed": answer["failed"], "seed": seed, "errors": errors}


def expand_batch(kept: dict[str, Any], events: list[Any]) -> dict[str, Any]:
    """The batch answer :func:`compact_batch` kept, rebuilt from the (same) body's ``events``: a
    valid event's result is its own eventId or the derived one, and its stream."""
    failed = {int(i): (stream, error) for i, stream, error in kept["errors"]}
    results: list[dict[str, Any]] = []
    for index, event in enumerate(events):
        if index in failed:
            stream, error = failed[index]
            results.append({"eventId": None, "stream": stream, "error": error})
            continue
        event_id = event.get("eventId")
        if event_id is None:
            event_id = event_id_for(kept["seed"], index)
        results.append({"eventId": event_id, "stream": event["stream"], "error": None})
    return {"successful": kept["successful"], "failed": kept["failed"], "results": results}


async def remember(
    idempotency: IdempotencyLog, keyed_request: Keyed | None, answer: dict[str, Any], batch: bool = False
) -> None:
    """Keep a successful answer under the request's key (nothing without a key); a batch answer
    compacted (:func:`compact_batch`). The events are published by now: if the broker does not take
    the answer, the request still answers, and a retry is published again with the same eventIds."""
    if keyed_request is None:
        return
    kept = compact_batch(answer, keyed_request.seed) if batch else answer
    try:
        await idempotency.remember(keyed_request.where, keyed_request.digest, 200, kept)
    except PublishFailed as exc:
        log.warning("could not keep the answer to X-Idempotency-Key %r: %s", keyed_request.key, exc)
