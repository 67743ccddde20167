"""``X-Idempotency-Key`` on the publish endpoints: replay the first answer, refuse a reused key."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import Header, Request

from api.auth import Caller
from api.errors import ApiError
from api.responses import JSON
from flux.kafka.idempotency import MAX_KEY_LENGTH, IdempotencyLog, KeyReused, body_hash, event_id_for, record_key

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
    """A request that carries an idempotency key: where its answer is kept, and its body's hash."""

    key: str
    scope: str
    where: bytes
    digest: str

    def fill_event_ids(self, events: list[Any]) -> list[Any]:
        """``events`` with an eventId derived from the key on each object that has none."""
        return [
            {**event, "eventId": event_id_for(self.scope, self.key, index)}
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
    keyed_request = Keyed(key, scope, record_key(scope, key, request.url.path), body_hash(body))
    try:
        found = idempotency.lookup(keyed_request.where, keyed_request.digest)
    except KeyReused as exc:
        raise ApiError(
            422,
            "X-Idempotency-Key was already used with a different body; use a new key for a new request",
        ) from exc
    if found is None:
        return keyed_request, None
    return keyed_request, JSON(found.answer, status_code=found.status, headers=REPLAYED)


async def remember(idempotency: IdempotencyLog, keyed_request: Keyed | None, answer: Any) -> None:
    """Keep a successful answer under the request's key (nothing without a key)."""
    if keyed_request is not None:
        await idempotency.remember(keyed_request.where, keyed_request.digest, 200, answer)
