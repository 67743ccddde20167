"""The Python client (flux.client) against a real node and broker: the blocking client's main calls
(with a replay followed to its report), and a subscription that outlives a restart of its node
without missing a change.

Every call, errors, retries and batches are proven in process: tests/api/test_client.py; the
subscription's protocol and resync against an in-memory node: tests/api/test_client_subscription.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

import pytest

from flux.client import (
    AsyncFluxClient,
    Change,
    FluxClient,
    InvalidRequest,
    NotFound,
    Reconnected,
    RetryPolicy,
    Snapshot,
    SnapshotComplete,
    StateUpdate,
    Subscription,
    event,
)
from tests.flux_process import FluxProcess

PATIENT = RetryPolicy(attempts=None, total_s=180.0, base_s=0.2, max_s=2.0)  # outlasts a restart
T0 = 1_771_804_800_000


def test_the_blocking_client_on_a_real_node(flux: FluxProcess, uid: str) -> None:
    with FluxClient(flux.url, retry=PATIENT) as client:
        assert client.health() and client.ready().ready
        published = client.publish(f"{uid}/a", {"t": 1}, stream="s", source="e2e", timestamp=T0, wait=True)
        batch = client.publish_batch(
            [event(f"{uid}/b{i:02d}", {"i": i}, timestamp=T0 + i) for i in range(30)],
            stream="s",
            source="e2e",
            wait=True,
            max_events=8,
        )
        assert batch.successful == 30 and batch.failed == 0
        entity = client.get(f"{uid}/a")
        assert entity is not None and entity.properties == {"t": 1} and client.get(f"{uid}/none") is None
        ids = [e.id for e in client.list(f"{uid}/", page_size=7)]
        assert ids == [f"{uid}/a"] + [f"{uid}/b{i:02d}" for i in range(30)]
        history = list(client.history(prefix=f"{uid}/", since=T0, page_size=9))
        assert len(history) == 31 and history[0].event_id == published.event_id
        with pytest.raises(InvalidRequest, match="source"):
            client.publish(f"{uid}/x", {}, stream="s", source="")
        assert client.delete(f"{uid}/a", wait=True).event_id is not None
        with pytest.raises(NotFound):
            client.delete(f"{uid}/a")
        assert client.delete_many(prefix=f"{uid}/b", wait=True).deleted == 30
        assert list(client.list(f"{uid}/")) == []
        job = client.start_replay(from_beginning=True)
        done = client.wait_replay(job.job_id, poll_s=0.2, timeout_s=120)
        assert done.status == "done", done.error
        assert done.report is not None and done.report.entities_changed == 0  # an unchanged log changes nothing


async def collect(changes: Subscription, into: list[Change]) -> None:
    """Append every change to ``into`` until the subscription ends."""
    async for change in changes:
        into.append(change)


async def until(condition: Callable[[], bool], what: str, reader: asyncio.Task[None], timeout: float = 120.0) -> None:
    """Wait until ``condition()`` holds (the ``reader``'s error if it fails first)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if reader.done():
            reader.result()
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def seen(changes: list[Change], entity_id: str, name: str, value: object) -> bool:
    """Whether a change, or a snapshot, told that ``entity_id``'s ``name`` became ``value``."""
    return any(
        (isinstance(c, StateUpdate) and (c.entity_id, c.property, c.value) == (entity_id, name, value))
        or (isinstance(c, Snapshot) and c.entity.id == entity_id and c.entity.properties.get(name) == value)
        for c in changes
    )


async def test_a_subscription_outlives_a_restart_of_its_node_without_missing_a_change(
    flux: FluxProcess, uid: str
) -> None:
    async with AsyncFluxClient(flux.url, retry=PATIENT) as client:
        await client.publish(f"{uid}/old", {"n": 0}, stream="s", source="e2e", wait=True)
        got: list[Change] = []
        async with client.subscribe(f"{uid}/*", reconnect=PATIENT) as changes:
            reader = asyncio.create_task(collect(changes, got))
            await client.publish(f"{uid}/live", {"n": 1}, stream="s", source="e2e", wait=True)
            await until(lambda: seen(got, f"{uid}/live", "n", 1), "the live change", reader)
            assert got[:2] == [got[0], SnapshotComplete(f"{uid}/*", 1, False)] and isinstance(got[0], Snapshot)

            await asyncio.to_thread(flux.stop)
            # retried until the node is back; no wait=True from here on: a node just back may apply
            # slowly (a 504), and the subscription is what shows each change arrived
            during = asyncio.create_task(client.publish(f"{uid}/during", {"n": 2}, stream="s", source="e2e"))
            await asyncio.sleep(1.0)
            assert not during.done()
            await asyncio.to_thread(flux.start)
            await during
            await client.publish(f"{uid}/old", {"n": 3}, stream="s", source="e2e")
            await client.publish(f"{uid}/after", {"n": 4}, stream="s", source="e2e")

            wanted = [("old", 0), ("live", 1), ("during", 2), ("old", 3), ("after", 4)]
            await until(
                lambda: all(seen(got, f"{uid}/{name}", "n", n) for name, n in wanted) and resynced(got),
                "every change, and the end of the resync snapshot",
                reader,
            )
            reconnected = [i for i, c in enumerate(got) if isinstance(c, Reconnected)]
            assert len(reconnected) >= 1 and changes.reconnects == len(reconnected)
            resync = got[reconnected[-1] + 1 :]
            assert all(isinstance(c, Snapshot) and c.resync for c in resync[: resync.index(resync_end(resync))])
            assert seen(resync, f"{uid}/old", "n", 3) and seen(resync, f"{uid}/after", "n", 4)
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader


def resynced(changes: list[Change]) -> bool:
    """Whether a resync snapshot ended after the last reconnect."""
    last = max((i for i, c in enumerate(changes) if isinstance(c, Reconnected)), default=len(changes))
    return any(isinstance(c, SnapshotComplete) and c.resync for c in changes[last:])


def resync_end(changes: list[Change]) -> Change:
    """The SnapshotComplete that ends a resync snapshot."""
    return next(c for c in changes if isinstance(c, SnapshotComplete) and c.resync)
