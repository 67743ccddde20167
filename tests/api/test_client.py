"""The Python client (flux.client) against an in-memory node: every call, paging, errors as exceptions,
retries that apply a publish once, and batches cut to the limits.

AsyncFluxClient talks to the app through httpx's ASGITransport, wrapped in a :class:`Wiretap`
that records every request and can lose answers (the request reached the node, the client sees a
ReadError); FluxClient talks to it through Starlette's TestClient, itself an ``httpx.Client``.
Live subscriptions are in tests/api/test_client_subscription.py and tests/e2e/test_client.py.
"""

from __future__ import annotations

import asyncio
import time
import warnings
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime

import httpx
import pytest

from flux.client import (
    AsyncFluxClient,
    Conflict,
    Entity,
    FluxClient,
    Forbidden,
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    RetryPolicy,
    Unauthorized,
    Unavailable,
    WaitTimeout,
    event,
)
from flux.client.exchange import IDEMPOTENCY_HEADER
from flux.kafka.publisher import PublishFailed
from tests.api.helpers import ADMIN_TOKEN, SECURED
from tests.api.memory import BASE_URL, MemoryNode, node_settings

with warnings.catch_warnings():  # Starlette would rather have httpx2, which Flux does not depend on
    warnings.filterwarnings("ignore", "Using `httpx` with `starlette.testclient`", UserWarning)
    from starlette.testclient import TestClient

FAST = RetryPolicy(attempts=4, total_s=10.0, base_s=0.01, max_s=0.05)
T0 = 1_771_804_800_000  # 2026-02-23T00:00:00Z


class Wiretap(httpx.AsyncBaseTransport):
    """The in-process transport to a node, recording every request; the next :attr:`lose` answers are
    lost after the node handled their requests."""

    def __init__(self, node: MemoryNode) -> None:
        self.inner = httpx.ASGITransport(app=node.app)
        self.requests: list[httpx.Request] = []
        self.lose = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        response = await self.inner.handle_async_request(request)
        if self.lose:
            self.lose -= 1
            await response.aread()
            raise httpx.ReadError("the answer was lost (test)", request=request)
        return response

    def paths(self, method: str = "GET") -> list[str]:
        """The paths of the requests of ``method``."""
        return [r.url.path for r in self.requests if r.method == method]


def client_of(node: MemoryNode, wiretap: Wiretap | None = None, **options: object) -> AsyncFluxClient:
    """An AsyncFluxClient of ``node`` with quick retries (options override)."""
    settings: dict[str, object] = {"retry": FAST, **options}
    return AsyncFluxClient(BASE_URL, transport=wiretap or Wiretap(node), **settings)  # type: ignore[arg-type]


@pytest.fixture
def wiretap(node: MemoryNode) -> Wiretap:
    """The transport of ``flux``."""
    return Wiretap(node)


@pytest.fixture
async def flux(node: MemoryNode, wiretap: Wiretap) -> AsyncIterator[AsyncFluxClient]:
    """A client of ``node`` (auth off)."""
    async with client_of(node, wiretap) as client:
        yield client


def published_ids(node: MemoryNode, entity_id: str) -> list[str]:
    """The eventIds the node's broker acknowledged for ``entity_id``, repeats included."""
    return [e["eventId"] for e in node.publisher.published if e["payload"]["entity_id"] == entity_id]


async def stored(flux: AsyncFluxClient, entity_id: str) -> list[str]:
    """The eventIds in ``entity_id``'s history: each event applied once appears once."""
    return [e.event_id async for e in flux.history(entity_id, since=0)]


# -- every call --------------------------------------------------------------------------------


async def test_publish_get_and_time_travel(flux: AsyncFluxClient) -> None:
    first = await flux.publish("acme/s1", {"t": 20, "unit": "C"}, stream="sensors", source="gw", timestamp=T0)
    await flux.publish("acme/s1", {"t": 25}, stream="sensors", source="gw", timestamp=T0 + 60_000, wait=True)
    assert first.stream == "sensors" and len(first.event_id) == 36 and not first.replayed
    entity = await flux.get("acme/s1")
    assert entity == Entity("acme/s1", {"t": 25, "unit": "C"}, "2026-02-23T00:01:00.000Z")
    then = await flux.get("acme/s1", at=datetime(2026, 2, 23, 0, 0, 30, tzinfo=UTC))
    assert then is not None and then.properties == {"t": 20, "unit": "C"}
    assert await flux.get("acme/s1", at=T0 - 1) is None
    assert await flux.get("acme/nobody") is None
    with pytest.raises(ValueError, match="timezone"):
        await flux.get("acme/s1", at=datetime(2026, 2, 23))


@pytest.mark.parametrize("entity_id", ["odd/100%", "odd/%41%2F", "odd/a b?c=d#e", "odd/ünï", "odd//x/"])
async def test_any_entity_id_reads_and_deletes_as_itself(flux: AsyncFluxClient, entity_id: str) -> None:
    await flux.publish(entity_id, {"id": entity_id}, stream="s", source="t")
    found = await flux.get(entity_id)
    assert found is not None and found.id == entity_id and found.properties == {"id": entity_id}
    assert (await flux.delete(entity_id, wait=True)).entity_id == entity_id
    assert await flux.get(entity_id) is None


async def test_list_follows_every_page_in_id_order(flux: AsyncFluxClient, wiretap: Wiretap) -> None:
    result = await flux.publish_batch(event(f"p/{i:02d}", {"i": i}, stream="s", source="t") for i in range(23))
    await flux.publish("q/other", {"i": -1}, stream="s", source="t")
    assert result.successful == 23
    wiretap.requests.clear()
    found = [e async for e in flux.list("p/", page_size=5)]
    assert [e.id for e in found] == [f"p/{i:02d}" for i in range(23)]
    assert [e.properties["i"] for e in found] == list(range(23))
    assert wiretap.paths() == ["/api/state/entities"] * 5  # pages of 5: the Link header led to each
    assert [e.id async for e in flux.list(namespace="q")] == ["q/other"]
    assert len([e async for e in flux.list(page_size=7)]) == 24
    assert [e async for e in flux.list("p/", at=T0)] == []  # none existed then


async def test_history_follows_every_page_with_filters(flux: AsyncFluxClient, wiretap: Wiretap) -> None:
    events = [
        event("h/a", {"n": i}, stream="odd" if i % 2 else "even", source="t", timestamp=T0 + i) for i in range(12)
    ]
    await flux.publish_batch(events)
    wiretap.requests.clear()
    history = [e async for e in flux.history("h/a", since=T0, page_size=5)]
    assert [e.properties for e in history] == [{"n": i} for i in range(12)]
    assert len(wiretap.paths()) == 3
    assert history[0].entity_id == "h/a" and history[0].timestamp == T0 and history[0].op is None
    newest = [e.properties async for e in flux.history("h/a", since=T0, order="desc", page_size=4, stream="odd")]
    assert newest == [{"n": i} for i in (11, 9, 7, 5, 3, 1)]
    until = datetime.fromtimestamp((T0 + 5) / 1000, UTC)
    window = [e.timestamp async for e in flux.history(prefix="h/", since=T0 + 3, until=until)]
    assert window == [T0 + 3, T0 + 4, T0 + 5]
    await flux.delete("h/a", wait=True)
    newest_first = [e async for e in flux.history("h/a", since=T0, order="desc", page_size=1)]
    last = newest_first[0]
    assert len(newest_first) == 13 and last.op == "delete" and last.properties is None


async def test_deletions(flux: AsyncFluxClient) -> None:
    await flux.publish_batch(event(f"d/{i}", {"i": i}, stream="s", source="t") for i in range(6))
    await flux.publish_batch(event(f"ns-d/{i}", {"i": i}, stream="s", source="t") for i in range(3))
    deleted = await flux.delete("d/0", wait=True)
    assert deleted.entity_id == "d/0" and deleted.event_id is not None
    with pytest.raises(NotFound, match="Entity not found") as missing:
        await flux.delete("d/0")
    assert missing.value.status == 404
    by_ids = await flux.delete_many(entity_ids=["d/1", "d/2", "d/never"], wait=True)
    assert (by_ids.deleted, by_ids.failed) == (2, 1)
    assert by_ids.errors[0].entity_id == "d/never" and by_ids.errors[0].error == "Entity not found"
    assert (await flux.delete_many(prefix="d/", wait=True)).deleted == 3
    assert (await flux.delete_many(namespace="ns-d", wait=True)).deleted == 3
    assert [e async for e in flux.list("d/")] == [] and [e async for e in flux.list("ns-d/")] == []
    for filters in ({}, {"prefix": "d/", "namespace": "ns-d"}):
        with pytest.raises(ValueError, match="exactly one"):
            await flux.delete_many(**filters)  # type: ignore[arg-type]


async def test_namespaces_with_auth_on(secured_node: MemoryNode) -> None:
    async with client_of(secured_node, token=ADMIN_TOKEN) as admin:
        created = await admin.register_namespace("acme")
        assert created.name == "acme" and created.token.startswith("flux_") and "token" not in repr(created)
        with pytest.raises(Conflict, match="taken"):
            await admin.register_namespace("acme")
        with pytest.raises(InvalidRequest, match="a-z"):
            await admin.register_namespace("No Such Name")
        async with client_of(secured_node, token=created.token) as tenant:
            await tenant.publish("acme/s1", {"t": 1}, stream="s", source="t", wait=True)
            with pytest.raises(Forbidden, match="acme"):
                await tenant.publish("other/s1", {"t": 1}, stream="s", source="t")
            with pytest.raises(Forbidden):
                await tenant.register_namespace("mine")
        described = await admin.get_namespace("acme")
        assert described is not None and described.entity_count == 1 and described.namespace_id == created.namespace_id
        assert [n.name for n in await admin.list_namespaces()] == ["acme"]
        assert await admin.get_namespace("nobody") is None
        rotated = await admin.rotate_token("acme")
        assert rotated.token != created.token
        async with client_of(secured_node, token=created.token) as stale:
            with pytest.raises(Unauthorized) as refused:
                await stale.publish("acme/s2", {"t": 1}, stream="s", source="t")
            assert refused.value.status == 401
        removed = await admin.delete_namespace("acme", purge=True)
        assert (removed.name, removed.purged, removed.entities_deleted) == ("acme", True, 1)
        with pytest.raises(NotFound):
            await admin.delete_namespace("acme")


async def test_replay_jobs(flux: AsyncFluxClient) -> None:
    job = await flux.start_replay(from_beginning=True, to_timestamp=datetime(2026, 1, 1, tzinfo=UTC))
    assert job.status == "running" and job.start == "beginning" and not job.finished
    with pytest.raises(Conflict, match="already running"):
        await flux.start_replay(from_offsets={0: 0})
    assert (await flux.get_replay(job.job_id)).job_id == job.job_id
    assert [j.job_id for j in await flux.list_replays()] == [job.job_id]
    cancelled = await flux.cancel_replay(job.job_id)
    assert cancelled.status == "cancelled" and cancelled.finished
    assert (await flux.wait_replay(job.job_id, poll_s=0.01, timeout_s=1)).status == "cancelled"
    second = await flux.start_replay(from_offsets="1:0")
    with pytest.raises(TimeoutError, match="still running"):
        await flux.wait_replay(second.job_id, poll_s=0.01, timeout_s=0.05)
    with pytest.raises(NotFound):
        await flux.get_replay("no-such-job")
    with pytest.raises(InvalidRequest):
        await flux.start_replay()  # no start given


async def test_health_and_readiness(node: MemoryNode, flux: AsyncFluxClient, wiretap: Wiretap) -> None:
    assert await flux.health() is True
    ready = await flux.ready()
    assert ready.ready and ready.partitions == [0, 1, 2, 3]
    node.table.recovering = True
    wiretap.requests.clear()
    ready = await flux.ready()  # not ready is an answer, and a probe is not retried
    assert not ready.ready and not ready.recovered and "recovery" in ready.detail
    assert len(wiretap.requests) == 1


def test_url_and_token_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLUX_URL", "http://flux.example:3001")
    monkeypatch.setenv("FLUX_TOKEN", "flux_secret")
    with FluxClient() as client:
        assert client.url == "http://flux.example:3001" and client.token == "flux_secret"
        assert str(client.http.base_url) == "http://flux.example:3001"
    with FluxClient("http://given:1", token="") as client:
        assert client.url == "http://given:1" and client.token is None
    monkeypatch.delenv("FLUX_URL")
    monkeypatch.delenv("FLUX_TOKEN")
    with FluxClient() as client:
        assert client.url == "http://localhost:3000" and client.token is None


# -- errors ------------------------------------------------------------------------------------


async def test_errors_carry_the_server_message_and_status(node: MemoryNode, flux: AsyncFluxClient) -> None:
    with pytest.raises(InvalidRequest, match="stream must not be empty") as invalid:
        await flux.publish("e/1", {"t": 1}, stream="", source="t")
    assert invalid.value.status == 400 and invalid.value.body["error"] == invalid.value.message
    with pytest.raises(InvalidRequest, match="limit") as bad_query:
        [e async for e in flux.list(page_size=100_000)]
    assert bad_query.value.status == 422
    with pytest.raises(PayloadTooLarge) as too_large:
        await flux.publish("e/1", {"blob": "x" * 70_000}, stream="s", source="t")
    assert too_large.value.status == 413
    node.publisher.failure = PublishFailed("the broker did not acknowledge the event: timeout")
    async with client_of(node, retry=RetryPolicy(attempts=2, base_s=0.01)) as impatient:
        with pytest.raises(Unavailable, match="did not acknowledge") as down:
            await impatient.publish("e/3", {}, stream="s", source="t")
    assert down.value.status == 503 and down.value.retry_after == 1.0


async def test_a_write_not_applied_in_time_is_a_wait_timeout_naming_the_pending_events() -> None:
    node = MemoryNode(node_settings(wait_timeout_ms=50))
    node.publisher.hold()
    async with client_of(node) as flux:
        with pytest.raises(WaitTimeout) as late:
            await flux.publish("e/2", {"t": 1}, stream="s", source="t", wait=True, event_id="late-1")
    assert late.value.status == 504 and late.value.pending == ["late-1"]


async def test_a_rate_limited_client_learns_when_to_come_back(secured_node: MemoryNode) -> None:
    async with client_of(secured_node, token=ADMIN_TOKEN) as admin:
        tenant_token = (await admin.register_namespace("busy")).token
    burst = [event(f"busy/{i}", {"i": i}, stream="s", source="t") for i in range(SECURED["rate_limit_per_minute"])]
    async with client_of(secured_node, token=tenant_token, retry=RetryPolicy(attempts=1)) as tenant:
        assert (await tenant.publish_batch(burst)).successful == len(burst)
        with pytest.raises(RateLimited, match="rate limit") as limited:
            await tenant.publish("busy/x", {"t": 1}, stream="s", source="t")
    assert limited.value.status == 429 and limited.value.retry_after >= 1


async def test_connection_errors_become_unavailable() -> None:
    async with AsyncFluxClient("http://127.0.0.1:9", retry=RetryPolicy(attempts=2, base_s=0.01)) as nowhere:
        with pytest.raises(Unavailable, match="ConnectError") as down:
            await nowhere.get("x")
        assert await nowhere.health() is False
    assert down.value.status is None


# -- retries -----------------------------------------------------------------------------------


async def test_a_publish_retried_after_503s_is_applied_once_under_one_key(
    node: MemoryNode, flux: AsyncFluxClient, wiretap: Wiretap
) -> None:
    node.publisher.fail(2, written=True)  # the broker took the event twice, each time without acknowledging
    result = await flux.publish("r/1", {"v": 1}, stream="s", source="t")
    keys = {r.headers[IDEMPOTENCY_HEADER] for r in wiretap.requests}
    assert len(wiretap.requests) == 3 and len(keys) == 1
    assert len({r.content for r in wiretap.requests}) == 1  # the same body, eventId included
    assert published_ids(node, "r/1") == [result.event_id] * 3
    assert await stored(flux, "r/1") == [result.event_id]


async def test_a_publish_whose_answer_was_lost_gets_the_first_answer_again(
    node: MemoryNode, flux: AsyncFluxClient, wiretap: Wiretap
) -> None:
    wiretap.lose = 1
    result = await flux.publish("r/2", {"v": 1}, stream="s", source="t")
    assert result.replayed and len(wiretap.requests) == 2
    assert len({r.headers[IDEMPOTENCY_HEADER] for r in wiretap.requests}) == 1
    assert published_ids(node, "r/2") == [result.event_id]  # published once: the retry was answered from the key


async def test_without_keys_a_retry_publishes_again_and_the_eventid_keeps_it_applied_once(
    node: MemoryNode, wiretap: Wiretap
) -> None:
    async with client_of(node, wiretap, idempotency_keys=False) as flux:
        wiretap.lose = 1
        result = await flux.publish("r/3", {"v": 1}, stream="s", source="t")
        assert not result.replayed and all(IDEMPOTENCY_HEADER not in r.headers for r in wiretap.requests)
        assert published_ids(node, "r/3") == [result.event_id] * 2
        assert await stored(flux, "r/3") == [result.event_id]


async def test_a_batch_retried_after_a_503_is_applied_once(
    node: MemoryNode, flux: AsyncFluxClient, wiretap: Wiretap
) -> None:
    node.publisher.fail(1, written=True)
    result = await flux.publish_batch(event(f"rb/{i}", {"i": i}, stream="s", source="t") for i in range(3))
    assert result.successful == 3 and len(wiretap.requests) == 2
    assert wiretap.requests[0].headers[IDEMPOTENCY_HEADER] == wiretap.requests[1].headers[IDEMPOTENCY_HEADER]
    for i, item in enumerate(result.results):
        assert published_ids(node, f"rb/{i}") == [item.event_id] * 2
        assert await stored(flux, f"rb/{i}") == [item.event_id]


async def test_a_given_key_is_used_and_a_repeated_call_is_answered_not_applied(
    node: MemoryNode, flux: AsyncFluxClient, wiretap: Wiretap
) -> None:
    first = await flux.publish("r/4", {"v": 1}, stream="s", source="t", event_id="e-4", idempotency_key="order-4")
    again = await flux.publish("r/4", {"v": 1}, stream="s", source="t", event_id="e-4", idempotency_key="order-4")
    assert (first.replayed, again.replayed) == (False, True)
    assert [r.headers[IDEMPOTENCY_HEADER] for r in wiretap.requests] == ["order-4"] * 2
    assert published_ids(node, "r/4") == ["e-4"]
    with pytest.raises(InvalidRequest, match="different body") as reused:
        await flux.publish("r/4", {"v": 2}, stream="s", source="t", idempotency_key="order-4")
    assert reused.value.status == 422


async def test_reads_are_retried_until_the_partitions_are_back(node: MemoryNode, flux: AsyncFluxClient) -> None:
    await flux.publish("r/5", {"v": 1}, stream="s", source="t")
    node.table.recovering = True
    asyncio.get_running_loop().call_later(0.3, setattr, node.table, "recovering", False)
    started = time.monotonic()
    found = await flux.get("r/5")
    assert found is not None and found.properties == {"v": 1}
    assert time.monotonic() - started >= 0.9  # Retry-After: 1 is honoured


async def test_a_retried_delete_whose_first_answer_was_lost_reports_the_deletion(
    node: MemoryNode, flux: AsyncFluxClient, wiretap: Wiretap
) -> None:
    await flux.publish("r/6", {"v": 1}, stream="s", source="t", wait=True)
    wiretap.lose = 1
    deleted = await flux.delete("r/6")
    assert (deleted.entity_id, deleted.event_id) == ("r/6", None)  # the retry found it gone: the first try did it
    assert len(wiretap.paths("DELETE")) == 2 and await flux.get("r/6") is None


async def test_a_namespace_registration_is_not_repeated_when_its_outcome_is_unknown(secured_node: MemoryNode) -> None:
    wiretap = Wiretap(secured_node)
    async with client_of(secured_node, wiretap, token=ADMIN_TOKEN) as admin:
        wiretap.lose = 1
        with pytest.raises(Unavailable, match="ReadError"):
            await admin.register_namespace("lost")
        assert len(wiretap.requests) == 1
        assert await admin.get_namespace("lost") is not None  # it was registered; its token is lost


async def test_retries_honour_retry_after_of_a_429(secured_node: MemoryNode) -> None:
    async with client_of(secured_node, token=ADMIN_TOKEN) as admin:
        tenant_token = (await admin.register_namespace("patient")).token
    burst = [event(f"patient/{i}", {"i": i}, stream="s", source="t") for i in range(SECURED["rate_limit_per_minute"])]
    async with client_of(secured_node, token=tenant_token) as tenant:
        await tenant.publish_batch(burst)
        started = time.monotonic()
        await tenant.publish("patient/x", {"t": 1}, stream="s", source="t", wait=True)
        assert time.monotonic() - started >= 0.9
        assert await tenant.get("patient/x") is not None


# -- batches cut to the limits -----------------------------------------------------------------


async def test_a_large_batch_goes_in_chunks_with_results_in_input_order(
    node: MemoryNode, flux: AsyncFluxClient, wiretap: Wiretap
) -> None:
    events = [event(f"c/{i:03d}", {"i": i}, stream="s", source="t") for i in range(250)]
    events[120] = {"stream": "s", "payload": {"entity_id": "c/120", "properties": {}}}  # no source
    result = await flux.publish_batch(events, max_events=100)
    assert len(wiretap.paths("POST")) == 3
    assert (result.successful, result.failed) == (249, 1)
    assert result.results[120].error == "events[120]: source is required"  # numbered in the whole batch
    assert all(item.event_id for i, item in enumerate(result.results) if i != 120)
    keys = [r.headers[IDEMPOTENCY_HEADER] for r in wiretap.requests]
    assert len(set(keys)) == 3 and [k.rsplit(".", 1)[1] for k in keys] == ["0", "1", "2"]
    assert len([e async for e in flux.list("c/", page_size=1000)]) == 249
    wiretap.requests.clear()
    by_size = await flux.publish_batch(events[:40], max_bytes=1024, stream="s", source="t")
    assert by_size.successful == 40 and len(wiretap.requests) > 3
    assert all(len(r.content) <= 1024 for r in wiretap.requests)


async def test_a_chunk_the_server_finds_too_large_is_halved(wiretap_small: tuple[MemoryNode, Wiretap]) -> None:
    node, wiretap = wiretap_small
    async with client_of(node, wiretap) as flux:
        big = "x" * 300
        events = [event(f"h2/{i:02d}", {"big": big}, stream="s", source="t") for i in range(40)]
        events.append(event("h2/huge", {"big": "y" * 5000}, stream="s", source="t"))
        result = await flux.publish_batch(events)  # the client knows the default limits, the node has lower ones
        assert result.successful == 40 and result.failed == 1
        assert result.results[40].error is not None and result.results[40].error.startswith("events[40]: ")
        sizes = [r.content.count(b'"entity_id"') for r in wiretap.requests]
        assert sizes[:3] == [41, 20, 10]  # halved until a chunk fits
        assert len(node.publisher.published) == 40
    keys = [r.headers[IDEMPOTENCY_HEADER] for r in wiretap.requests]
    assert len(set(keys)) == len(keys) and all(k.startswith(keys[0]) for k in keys)


@pytest.fixture
def wiretap_small() -> tuple[MemoryNode, Wiretap]:
    """A node that takes at most 10 events and 4 KiB per batch, and its transport."""
    node = MemoryNode(node_settings(max_batch_events=10, max_batch_bytes=4096))
    return node, Wiretap(node)


async def test_an_event_no_batch_can_hold_fails_alone_before_anything_is_sent(
    flux: AsyncFluxClient, wiretap: Wiretap
) -> None:
    events = [event("z/1", {"t": 1}, stream="s", source="t"), event("z/2", {"b": "x" * 2000}, stream="s", source="t")]
    result = await flux.publish_batch(events, max_bytes=1000)
    assert (result.successful, result.failed) == (1, 1)
    assert result.results[1].error is not None and "more than a batch may hold" in result.results[1].error
    assert len(wiretap.requests) == 1


async def test_a_chunk_with_no_valid_event_fails_item_by_item(flux: AsyncFluxClient) -> None:
    bad = {"stream": "s", "payload": {"entity_id": "v/x", "properties": {}}}
    result = await flux.publish_batch([bad, bad, event("v/1", {"t": 1}, stream="s", source="t")], max_events=2)
    assert (result.successful, result.failed) == (1, 2)
    assert [item.error for item in result.results[:2]] == [
        "events[0]: source is required",
        "events[1]: source is required",
    ]


# -- the blocking client -----------------------------------------------------------------------


@pytest.fixture
def sync_flux(node: MemoryNode) -> Iterator[FluxClient]:
    """A FluxClient of ``node`` through Starlette's TestClient (an httpx.Client)."""
    with TestClient(node.app, base_url=BASE_URL) as http, FluxClient(http=http, retry=FAST) as client:
        yield client


def test_the_blocking_client_has_the_same_calls(node: MemoryNode, sync_flux: FluxClient) -> None:
    published = sync_flux.publish("sync/a", {"t": 1}, stream="s", source="t", timestamp=T0, wait=True)
    batch = sync_flux.publish_batch(
        [event(f"sync/{i:02d}", {"i": i}, timestamp=T0 + i) for i in range(12)], stream="s", source="t", max_events=5
    )
    assert batch.successful == 12 and published.event_id
    entity = sync_flux.get("sync/a")
    assert entity is not None and entity.properties == {"t": 1} and sync_flux.get("sync/none") is None
    assert [e.id for e in sync_flux.list("sync/", page_size=5)] == [f"sync/{i:02d}" for i in range(12)] + ["sync/a"]
    assert len(list(sync_flux.history(prefix="sync/", since=T0, page_size=4))) == 13
    assert sync_flux.delete("sync/a").event_id is not None
    with pytest.raises(NotFound):
        sync_flux.delete("sync/a")
    assert sync_flux.delete_many(prefix="sync/").deleted == 12
    node.publisher.fail(1, written=True)
    retried = sync_flux.publish("sync/r", {"v": 1}, stream="s", source="t")
    assert published_ids(node, "sync/r") == [retried.event_id] * 2
    assert [e.event_id for e in sync_flux.history("sync/r", since=0)] == [retried.event_id]
    assert sync_flux.health() and sync_flux.ready().ready
    job = sync_flux.start_replay(from_beginning=True)
    assert sync_flux.cancel_replay(job.job_id).status == "cancelled"
    assert sync_flux.wait_replay(job.job_id).status == "cancelled" and sync_flux.list_replays()[0].job_id == job.job_id
    assert sync_flux.list_namespaces() == [] and sync_flux.get_namespace("nobody") is None
