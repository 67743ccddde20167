"""``?wait=true``: answer a write only once the reducer applied it, or 504 with what is pending."""

from __future__ import annotations

from fastapi import Query

from api.errors import ApiError
from api.live.applied import AppliedOffsets
from flux.config import Settings
from flux.kafka.publisher import Offsets
from flux.model.events import Envelope, entity_of
from flux.model.partitioning import partition_for

WAIT_QUERY = Query(False, description="Answer once the event(s) are applied, so that a following GET sees them")
WAIT_TIMEOUT_QUERY = Query(
    None, ge=1, description="With wait=true: how long to wait, in ms (default FLUX_WAIT_TIMEOUT_MS); then 504"
)


def wait_timeout(settings: Settings, timeout_ms: int | None) -> int:
    """The wait timeout in ms for a request; 422 above FLUX_WAIT_MAX_TIMEOUT_MS (checked before writing)."""
    timeout = settings.wait_timeout_ms if timeout_ms is None else timeout_ms
    if timeout > settings.wait_max_timeout_ms:
        raise ApiError(422, f"wait_timeout_ms must be at most {settings.wait_max_timeout_ms}")
    return timeout


async def wait_until_applied(
    applied: AppliedOffsets,
    settings: Settings,
    offsets: Offsets,
    envelopes: list[Envelope],
    timeout: int,
    answer: dict[str, object],
) -> None:
    """Wait up to ``timeout`` ms until ``offsets`` are applied; else 504 naming the eventIds still pending.

    ``answer`` is the body the request would have had; the 504 carries it too, since the events
    were accepted (they will be applied, just not yet).
    """
    late = set(await applied.wait(offsets, timeout / 1000))
    if not late:
        return
    pending = [e["eventId"] for e in envelopes if partition_for(entity_of(e), settings.partitions) in late]
    raise ApiError(
        504,
        f"accepted, but not applied within {timeout} ms; the events will still be applied",
        {**answer, "pending": pending},
    )
