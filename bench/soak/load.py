"""The soak's writers: single and batch publishes, each request sent again until acknowledged.

Writer ``k`` owns the entities ``<run>/w<k>/e-<j>`` and sends one request at a time, either one
event (``POST /api/events``) or a batch of distinct entities of its set (``POST /api/events/batch``).
Event ``n`` of an entity sets ``seq = n`` and one of ``p0``..``p3``, at a timestamp above the
entity's previous one. A try that fails (no answer, ``5xx``, a time-out) is sent again to the next
node with the same eventIds and idempotency key, backing off, until it is acknowledged or
``give_up_s`` passed (its events are then "unknown": applied or not, the check accepts both).
"""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

import httpx

from bench.soak.ledger import Ledger
from flux.client import NO_RETRY, AsyncFluxClient, FluxError
from flux.client.errors import Forbidden, InvalidRequest, Unauthorized

SINGLE_SHARE = 0.7  # of requests; batches carry most events
BATCH_SIZES = (2, 40)
PROPERTIES = 4


def clients_for(urls: list[str], token: str, timeout: float = 30.0) -> list[AsyncFluxClient]:
    """One client per node, no retries of their own (the soak retries across nodes)."""
    return [AsyncFluxClient(url, token=token, timeout=timeout, retry=NO_RETRY) for url in urls]


class Writer:
    """One sequential writer over its own entities; ``rate`` events/s on average."""

    def __init__(
        self,
        index: int,
        run: str,
        entities: int,
        clients: list[AsyncFluxClient],
        ledger: Ledger,
        rate: float,
        rng: random.Random,
        give_up_s: float = 600.0,
    ) -> None:
        self.index = index
        self.prefix = f"{run}/w{index}/"
        self.ids = [f"{self.prefix}e-{j}" for j in range(entities)]
        self.clients = clients
        self.ledger = ledger
        self.rate = rate
        self.rng = rng
        self.give_up_s = give_up_s
        self.seq: dict[str, int] = {}
        self.last_ts: dict[str, int] = {}
        self.sent = 0
        self.turn = rng.randrange(len(clients))

    def _event(self, entity_id: str) -> dict[str, Any]:
        seq = self.seq.get(entity_id, 0) + 1
        self.seq[entity_id] = seq
        timestamp = max(int(time.time() * 1000), self.last_ts.get(entity_id, 0) + 1)
        self.last_ts[entity_id] = timestamp
        self.sent += 1
        return {
            "eventId": f"{self.prefix}{self.sent}",
            "stream": "soak",
            "source": f"writer-{self.index}",
            "timestamp": timestamp,
            "payload": {
                "entity_id": entity_id,
                "properties": {"seq": seq, f"p{self.rng.randrange(PROPERTIES)}": self.rng.randrange(1_000_000)},
            },
        }

    async def run(self, stop: asyncio.Event) -> None:
        """Publish until ``stop`` is set; the request in flight is finished (acknowledged or given up)."""
        budget = 0.0
        last = time.monotonic()
        while not stop.is_set():
            now = time.monotonic()
            budget = min(budget + (now - last) * self.rate, 2 * BATCH_SIZES[1])
            last = now
            if self.rng.random() < SINGLE_SHARE:
                events = [self._event(self.rng.choice(self.ids))]
            else:
                size = self.rng.randint(*BATCH_SIZES)
                events = [self._event(entity_id) for entity_id in self.rng.sample(self.ids, size)]
            if budget < len(events):
                await asyncio.sleep((len(events) - budget) / self.rate)
                budget, last = float(len(events)), time.monotonic()
            budget -= len(events)
            await self._deliver(events)

    async def _deliver(self, events: list[dict[str, Any]]) -> None:
        key = f"soak-{events[0]['eventId']}"
        batch = len(events) > 1
        started = time.monotonic()
        pause = 0.1
        while True:
            client = self.clients[self.turn % len(self.clients)]
            try:
                if batch:
                    result = await client.publish_batch(events, idempotency_key=key)
                    refused = [item.error for item in result.results if item.error is not None]
                    if refused:
                        self.ledger.refused_events += len(refused)
                        self.ledger.note("refused", events[0]["payload"]["entity_id"], refused[0])
                        ok = {item.event_id for item in result.results if item.error is None}
                        events = [e for e in events if e["eventId"] in ok]
                else:
                    one = events[0]
                    answer = await client.publish(
                        one["payload"]["entity_id"],
                        one["payload"]["properties"],
                        stream=one["stream"],
                        source=one["source"],
                        timestamp=one["timestamp"],
                        event_id=one["eventId"],
                        idempotency_key=key,
                    )
                    if answer.replayed:
                        self.ledger.replayed_answers += 1
                self.ledger.acknowledged(events, batch)
                return
            except (InvalidRequest, Unauthorized, Forbidden) as exc:
                # The server refused the request itself: a bug of the soak or of Flux, never retried.
                self.ledger.refused_events += len(events)
                self.ledger.note("refused", events[0]["payload"]["entity_id"], f"{exc.status}: {exc.message}")
                return
            except FluxError as exc:
                self.ledger.failed(f"{exc.status or 'no connection'}")
            except httpx.HTTPError as exc:
                self.ledger.failed(type(exc).__name__)
            self.turn += 1
            if time.monotonic() - started > self.give_up_s:
                self.ledger.gave_up(events)
                return
            await asyncio.sleep(pause * (0.5 + self.rng.random()))
            pause = min(pause * 2, 2.0)
