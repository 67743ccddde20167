"""The client's pure parts (flux/client/): the retry policy and its bounds, the rules of a call's tries,
errors from answers, batches cut to the limits, and what the client shares with the server.

Every call of the client against an in-memory node is in tests/api/test_client.py.
"""

from __future__ import annotations

import inspect
from datetime import UTC, datetime, timedelta, timezone
from email.utils import format_datetime
from typing import Any

import httpx
import orjson
import pytest

from flux.client import AsyncFluxClient, FluxClient, errors
from flux.client.batch import MAX_BATCH_BYTES, MAX_BATCH_EVENTS, BatchLimits, BatchPlan, ChunkAnswer, event
from flux.client.exchange import Call, Exchange, Safety, TryAgain
from flux.client.models import FINISHED, BatchItem
from flux.client.operations import entity_path, time_param
from flux.client.retry import Attempts, RetryPolicy
from flux.config import Settings
from flux.model import replay
from tests.unit.test_layering import import_graph

NOW = 1000.0


class Clock:
    """A clock the test moves."""

    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


def answer(status: int, body: Any = None, headers: dict[str, str] | None = None) -> httpx.Response:
    """An answer of ``status`` to a GET, with a JSON body."""
    request = httpx.Request("GET", "http://flux/x")
    return httpx.Response(
        status, json=body if body is not None else {"error": f"status {status}"}, headers=headers, request=request
    )


def exchange(safety: Safety = Safety.REPEATABLE, **options: Any) -> Exchange[str]:
    call: Call[str] = Call("GET", "/x", lambda r: f"decoded {r.status_code}", safety=safety, **options)
    return Exchange(call, RetryPolicy(attempts=3, base_s=0.1, max_s=1.0, jitter=0.0), {})


# -- the retry policy --------------------------------------------------------------------------


def test_backoff_doubles_up_to_the_cap_less_its_jitter() -> None:
    policy = RetryPolicy(base_s=0.5, max_s=4.0, jitter=0.5)
    assert [policy.backoff(n, lambda: 0.0) for n in range(1, 6)] == [0.5, 1.0, 2.0, 4.0, 4.0]
    assert [policy.backoff(n, lambda: 1.0) for n in range(1, 6)] == [0.25, 0.5, 1.0, 2.0, 2.0]
    assert policy.backoff(10_000, lambda: 0.0) == 4.0  # no overflow


def test_attempts_are_bounded_by_count_and_by_total_time() -> None:
    counted = Attempts(RetryPolicy(attempts=3, total_s=None, base_s=1.0, jitter=0.0), Clock())
    assert [counted.pause(), counted.pause(), counted.pause()] == [1.0, 2.0, None]  # 3 tries in all
    clock = Clock()
    timed = Attempts(RetryPolicy(attempts=None, total_s=5.0, base_s=1.0, max_s=1.0, jitter=0.0), clock)
    assert timed.pause() == 1.0
    clock.now = NOW + 3.9
    assert timed.pause() == 1.0
    clock.now = NOW + 4.5
    assert timed.pause() is None  # a retry would start past 5 s
    timed.reset()
    assert timed.pause() == 1.0 and timed.failures == 1


def test_retry_after_is_honoured_unless_it_lies_beyond_the_time_left() -> None:
    attempts = Attempts(RetryPolicy(attempts=None, total_s=10.0, base_s=0.1, jitter=0.0), Clock())
    assert attempts.pause(retry_after=3.0) == 3.0
    assert attempts.pause(retry_after=0.0) == 0.2  # the backoff when it is longer
    assert attempts.pause(retry_after=11.0) is None


@pytest.mark.parametrize("options", [{"attempts": 0}, {"jitter": 1.5}, {"base_s": -1.0}])
def test_a_policy_that_cannot_work_is_refused(options: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        RetryPolicy(**options)


# -- the tries of one call ---------------------------------------------------------------------


def test_a_repeatable_call_is_retried_on_429_502_503_and_any_connection_error() -> None:
    tries = exchange()
    with pytest.raises(TryAgain) as again:
        tries.outcome(answer(503, headers={"Retry-After": "0.7"}))
    assert again.value.delay == 0.7
    assert tries.failed(httpx.ReadError("reset")) == 0.2
    with pytest.raises(errors.Unavailable, match="status 502") as spent:  # the third try was the last
        tries.outcome(answer(502))
    assert spent.value.status == 502
    assert exchange().outcome(answer(200)) == "decoded 200"


def test_a_once_call_is_retried_only_when_the_server_certainly_did_nothing() -> None:
    tries = exchange(Safety.ONCE)
    assert tries.failed(httpx.ConnectError("refused")) == 0.1
    with pytest.raises(TryAgain):
        tries.outcome(answer(429, headers={"Retry-After": "0"}))
    with pytest.raises(errors.Unavailable, match="ReadTimeout"):
        exchange(Safety.ONCE).failed(httpx.ReadTimeout("no answer"))
    with pytest.raises(errors.Unavailable):
        exchange(Safety.ONCE).outcome(answer(503))


def test_a_probe_is_tried_once_and_accepted_statuses_are_decoded() -> None:
    with pytest.raises(errors.Unavailable):
        exchange(retry=False).outcome(answer(503))
    assert exchange(accept=frozenset({404})).outcome(answer(404)) == "decoded 404"


def test_gone_answers_only_a_retry() -> None:
    with pytest.raises(errors.NotFound):
        exchange(gone=lambda: "gone").outcome(answer(404))
    tries = exchange(gone=lambda: "gone")
    tries.failed(httpx.ReadError("reset"))
    assert tries.outcome(answer(404)) == "gone"


# -- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (400, errors.InvalidRequest),
        (401, errors.Unauthorized),
        (403, errors.Forbidden),
        (404, errors.NotFound),
        (409, errors.Conflict),
        (413, errors.PayloadTooLarge),
        (422, errors.InvalidRequest),
        (429, errors.RateLimited),
        (502, errors.Unavailable),
        (503, errors.Unavailable),
        (504, errors.WaitTimeout),
        (500, errors.ServerError),
        (418, errors.InvalidRequest),
    ],
)
def test_each_status_has_its_exception_with_the_server_message(status: int, kind: type[errors.FluxError]) -> None:
    error = errors.error_from_response(answer(status, {"error": "the reason", "pending": ["e1"]}))
    assert type(error) is kind and error.status == status and error.message == "the reason"
    assert str(error) == f"{status}: the reason"


def test_retry_after_as_seconds_or_a_date_and_bodies_that_are_not_json() -> None:
    assert errors.retry_after(answer(429, headers={"Retry-After": "3"})) == 3.0
    later = datetime.now(UTC) + timedelta(seconds=30)
    assert (
        25 < (errors.retry_after(answer(503, headers={"Retry-After": format_datetime(later, usegmt=True)})) or 0) <= 30
    )
    assert errors.retry_after(answer(503, headers={"Retry-After": "soon"})) is None
    limited = errors.error_from_response(answer(429))
    assert isinstance(limited, errors.RateLimited) and limited.retry_after == 1.0
    plain = errors.error_from_response(
        httpx.Response(502, text="Bad gateway", request=httpx.Request("GET", "http://x"))
    )
    assert plain.message == "Bad gateway" and plain.body == {}


# -- batches -----------------------------------------------------------------------------------


def events(count: int, padding: int = 0) -> list[dict[str, Any]]:
    return [event(f"b/{i:03d}", {"p": "x" * padding}, stream="s", source="t") for i in range(count)]


def bodies(plan: BatchPlan) -> list[tuple[list[dict[str, Any]], str | None, bytes]]:
    """Every chunk's events, key and body, each answered as accepted."""
    sent = []
    while (call := plan.next_call()) is not None:
        assert call.body is not None
        chunk = orjson.loads(call.body)
        sent.append((chunk, call.key, call.body))
        plan.take(ChunkAnswer([BatchItem(e["eventId"], e["stream"], None) for e in chunk]))
    return sent


def test_a_batch_is_cut_by_events_and_by_bytes_and_keys_follow_the_chunks() -> None:
    sent = bodies(BatchPlan(events(25), BatchLimits(max_events=10), key="k", wait=False))
    assert [len(chunk) for chunk, _, _ in sent] == [10, 10, 5] and [k for _, k, _ in sent] == ["k.0", "k.1", "k.2"]
    one = bodies(BatchPlan(events(3), BatchLimits(), key="k", wait=False))
    assert [k for _, k, _ in one] == ["k"]
    ((_, _, single),) = bodies(BatchPlan(events(1, 100), BatchLimits(), key=None, wait=False))
    two = 2 + 2 * (len(single) - 2) + 1  # the bytes of a chunk of two: brackets, events, a comma
    by_bytes = bodies(BatchPlan(events(9, 100), BatchLimits(max_bytes=two), key=None, wait=False))
    assert [len(chunk) for chunk, _, _ in by_bytes] == [2, 2, 2, 2, 1]
    assert all(len(body) <= two for _, _, body in by_bytes)
    assert all(key is None for _, key, _ in by_bytes)


def test_events_get_increasing_event_ids_and_defaults_without_losing_their_own() -> None:
    given = [{"payload": {"entity_id": "a", "properties": {}}}, {**event("b", {}, stream="own"), "eventId": "mine"}]
    plan = BatchPlan([*given, *events(3)], BatchLimits(), key=None, wait=True, stream="dflt", source="src")
    ((chunk, _, _),) = bodies(plan)
    assert [e["stream"] for e in chunk[:2]] == ["dflt", "own"] and {e["source"] for e in chunk} == {"src", "t"}
    assert chunk[1]["eventId"] == "mine"
    fresh = [chunk[0]["eventId"], *[e["eventId"] for e in chunk[2:]]]
    assert fresh == sorted(fresh) and len(set(fresh)) == 4  # UUIDv7, in batch order


def test_a_chunk_too_large_is_halved_under_derived_keys_and_errors_are_renumbered() -> None:
    plan = BatchPlan(events(4), BatchLimits(max_events=2), key="k", wait=False)
    first = plan.next_call()
    assert first is not None and first.key == "k.0" and first.params is None
    plan.take(ChunkAnswer(None))  # 413: halve it
    keys = []
    while (call := plan.next_call()) is not None:
        keys.append(call.key)
        size = len(orjson.loads(call.body or b"[]"))
        plan.take(ChunkAnswer([BatchItem(None, None, f"events[{i}]: nope") for i in range(size)]))
    assert keys == ["k.0.0", "k.0.1", "k.1"]
    result = plan.result()
    assert (result.successful, result.failed) == (0, 4)
    assert [item.error for item in result.results] == [f"events[{i}]: nope" for i in range(4)]


def test_a_chunk_answer_is_decoded_from_the_results_or_raised() -> None:
    plan = BatchPlan(events(2), BatchLimits(), key=None, wait=False)
    call = plan.next_call()
    assert call is not None
    results = [{"eventId": None, "stream": "s", "error": "events[1]: bad"}] * 2
    assert (
        call.decode(answer(400, {"error": "no valid events", "results": results})).results
        == [BatchItem(None, "s", "events[1]: bad")] * 2
    )
    assert call.decode(answer(413)).results is None
    with pytest.raises(errors.Forbidden):
        call.decode(answer(403, {"error": "no token covers it"}))


# -- what the client shares with the server ----------------------------------------------------


def test_the_client_knows_the_server_defaults() -> None:
    defaults = Settings.model_fields
    assert defaults["max_batch_events"].default == MAX_BATCH_EVENTS
    assert defaults["max_batch_bytes"].default == MAX_BATCH_BYTES
    assert replay.FINISHED == FINISHED


def test_the_client_imports_only_itself_and_the_pure_event_ids() -> None:
    graph = import_graph()
    used = {target for name, targets in graph.items() if name.startswith("flux.client") for target in targets}
    assert {t for t in used if not t.startswith("flux.client")} <= {"flux", "flux.model.ids"}


def test_times_and_entity_paths() -> None:
    assert time_param(datetime(2026, 2, 23, 0, 0, 0, 5000, tzinfo=UTC)) == 1_771_804_800_005
    assert time_param(datetime(2026, 2, 23, 1, tzinfo=timezone(timedelta(hours=1)))) == 1_771_804_800_000
    assert time_param("2026-02-23T00:00:00Z") == "2026-02-23T00:00:00Z" and time_param(5) == 5
    with pytest.raises(ValueError, match="timezone"):
        time_param(datetime(2026, 2, 23))
    assert entity_path("acme/a b%41") == "/api/state/entities/acme/a%20b%2541"  # escaped once: decoded once


def test_both_clients_offer_the_same_calls_with_the_same_parameters() -> None:
    def calls(client: type) -> dict[str, inspect.Signature]:
        return {
            name: inspect.signature(member)
            for name, member in inspect.getmembers(client, inspect.isfunction)
            if not name.startswith("_")
        }

    blocking, asyncio = calls(FluxClient), calls(AsyncFluxClient)
    assert set(asyncio) - set(blocking) == {"aclose", "subscribe"} and set(blocking) - set(asyncio) == {"close"}
    for name in set(blocking) & set(asyncio):
        shape = [(p.name, p.kind, p.default) for p in blocking[name].parameters.values()]
        assert shape == [(p.name, p.kind, p.default) for p in asyncio[name].parameters.values()], name
        assert getattr(FluxClient, name).__doc__ and getattr(AsyncFluxClient, name).__doc__, name
