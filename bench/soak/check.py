"""The end of the soak: nothing acknowledged is lost, and every node serves the fold of it.

1. Every acknowledged eventId is in the events topic (read back with a plain read_committed consumer).
2. Each node's list of the run's entities (``GET /api/state/entities?prefix=<run>/``, every page)
   equals, entity by entity, the fold of the acknowledged events with the pure reducer, waiting up
   to ``timeout`` for the nodes to fold what is still in flight. An entity with events that were
   never acknowledged ("unknown") is not compared.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from agents.log_reader import logged_events
from flux.client import AsyncFluxClient, FluxError
from flux.config import Settings


async def events_in_topic(bootstrap: str, partitions: int, prefix: str) -> set[str]:
    """The eventIds starting with ``prefix`` in the events topic."""
    settings = Settings(kafka_bootstrap_servers=bootstrap, partitions=partitions)
    return {
        event["eventId"] async for event in logged_events(settings, "soak-check") if event["eventId"].startswith(prefix)
    }


@dataclass
class Differences:
    """How a node's entities differ from the expected fold."""

    missing: list[str] = field(default_factory=list)  # expected, not served
    stale: list[str] = field(default_factory=list)  # served with a smaller seq than acknowledged
    different: list[str] = field(default_factory=list)  # other differences
    extra: list[str] = field(default_factory=list)  # served, no acknowledged event
    examples: list[str] = field(default_factory=list)

    def count(self) -> int:
        return len(self.missing) + len(self.stale) + len(self.different) + len(self.extra)


def compare(expected: dict[str, dict[str, Any]], served: dict[str, dict[str, Any]], unknown: set[str]) -> Differences:
    """``served`` entity views against ``expected`` ones, skipping the ``unknown`` entities."""
    found = Differences()
    for entity_id, want in expected.items():
        if entity_id in unknown:
            continue
        got = served.get(entity_id)
        if got is None:
            found.missing.append(entity_id)
        elif got != want:
            seq, wanted = got["properties"].get("seq", 0), want["properties"]["seq"]
            (found.stale if seq < wanted else found.different).append(entity_id)
            if len(found.examples) < 5:
                found.examples.append(f"{entity_id}: served {got}, expected {want}")
        else:
            continue
    for entity_id in served:
        if entity_id not in expected and entity_id not in unknown:
            found.extra.append(entity_id)
    return found


async def served_entities(client: AsyncFluxClient, prefix: str) -> dict[str, dict[str, Any]]:
    """Every entity under ``prefix`` one node serves, as ``to_entity`` views."""
    return {
        entity.id: {"id": entity.id, "properties": entity.properties, "lastUpdated": entity.last_updated}
        async for entity in client.list(prefix, page_size=1000)
    }


async def converge(
    clients: dict[str, AsyncFluxClient],
    expected: dict[str, dict[str, Any]],
    unknown: set[str],
    prefix: str,
    timeout: float,
) -> tuple[dict[str, Differences], float]:
    """Each node's differences once none is left (or at ``timeout``), and the seconds it took."""
    started = time.monotonic()
    result: dict[str, Differences] = {}
    while True:
        for name, client in clients.items():
            try:
                result[name] = compare(expected, await served_entities(client, prefix), unknown)
            except FluxError as exc:
                result[name] = Differences(examples=[f"list failed: {exc}"], missing=["(list failed)"])
        if all(found.count() == 0 for found in result.values()) or time.monotonic() - started > timeout:
            return result, time.monotonic() - started
        await asyncio.sleep(2.0)
