"""Webhook rules without I/O: signing, delivery ids and bodies, backoff, the pause rule, URL and address
policy, patterns, and the registry fold of the webhooks topic."""

from __future__ import annotations

import asyncio
from collections import deque

import orjson
import pytest
from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord

from api.live.subscriptions import Pattern
from api.webhooks.delivery import Batch, HookState, Runner
from api.webhooks.targets import TargetRefused, check_target, check_url, delivery_request, pinned
from flux.config import Settings
from flux.model.changes import ChangeRecord, EntityChange, encode_records
from flux.model.webhooks import (
    ACTIVE,
    FAILING,
    PAUSED,
    Attempt,
    FailureStreak,
    InvalidRecord,
    InvalidWebhook,
    Pause,
    Registry,
    Report,
    Webhook,
    backoff,
    blocked_address,
    check_pattern,
    check_secret,
    delivery_body,
    delivery_id,
    new_secret,
    orphaned,
    pause_record,
    report_record,
    sign,
    verify,
)

HOOK = Webhook("wh_1", "https://example.com/hook", "acme/*", "s" * 20, 1_700_000_000_000)


def test_the_signature_is_the_hex_hmac_sha256_of_the_raw_body() -> None:
    # printf '{"a":1}' | openssl dgst -sha256 -hmac key
    assert sign("key", b'{"a":1}') == "sha256=88a67f24bbcdaed0e6c997404bb79a743baf44c6bab2f4c27328e3009d22e342"
    assert verify("key", b"body", sign("key", b"body"))
    assert not verify("key", b"body!", sign("key", b"body"))
    assert not verify("other", b"body", sign("key", b"body"))


def test_a_delivery_id_depends_on_the_webhook_and_the_offsets_only() -> None:
    ranges = {3: (10, 12), 1: (4, 4)}
    assert delivery_id("wh_1", ranges) == delivery_id("wh_1", {1: (4, 4), 3: (10, 12)})
    assert delivery_id("wh_1", ranges) != delivery_id("wh_2", ranges)
    assert delivery_id("wh_1", ranges) != delivery_id("wh_1", {3: (10, 13), 1: (4, 4)})
    assert delivery_id("wh_1", ranges).startswith("dl_")


def test_the_body_carries_the_websocket_messages_as_they_are() -> None:
    messages = ['{"type":"state_update","entity_id":"a","property":"t","value":1,"timestamp":"x"}']
    body = orjson.loads(delivery_body("wh_1", "dl_x", 1700, {2: (5, 7)}, messages))
    assert body == {
        "webhook": "wh_1",
        "delivery": "dl_x",
        "timestamp": 1700,
        "offsets": {"2": [5, 7]},
        "changes": [orjson.loads(messages[0])],
    }
    assert orjson.loads(delivery_body("wh_1", "dl_x", 1, {}, []))["changes"] == []


def test_backoff_doubles_up_to_the_maximum_with_jitter_in_the_upper_half() -> None:
    assert [backoff(n, 1.0, 10.0, lambda: 1.0) for n in range(1, 7)] == [1, 2, 4, 8, 10, 10]
    assert [backoff(n, 1.0, 10.0, lambda: 0.0) for n in range(1, 5)] == [0.5, 1, 2, 4]
    waits = {backoff(3, 1.0, 60.0) for _ in range(50)}
    assert all(2 <= w <= 4 for w in waits) and len(waits) > 1


def test_a_webhook_is_paused_only_after_failing_longer_than_the_limit() -> None:
    streak = FailureStreak()
    assert not streak.should_pause(100.0, 10)
    streak.failed(100.0)
    streak.failed(105.0)  # the streak began at the first failure
    assert not streak.should_pause(110.0, 10)
    assert streak.should_pause(110.5, 10)
    streak.succeeded()
    assert not streak.should_pause(500.0, 10)
    streak.failed(500.0)
    assert not streak.should_pause(505.0, 10)


@pytest.mark.parametrize(
    ("pattern", "matching", "other"),
    [("acme/s1", "acme/s1", "acme/s10"), ("acme/*", "acme/s1", "acmes"), ("*", "anything", None)],
)
def test_patterns_are_the_websockets(pattern: str, matching: str, other: str | None) -> None:
    parsed = Pattern.parse(check_pattern(pattern))
    assert parsed.matches(matching)
    assert other is None or not parsed.matches(other)


@pytest.mark.parametrize("pattern", ["", "a*b*", "*a", 7, None, "x" * 2000])
def test_malformed_patterns_are_refused(pattern: object) -> None:
    with pytest.raises(InvalidWebhook):
        check_pattern(pattern)


def test_secrets_have_rules_and_generated_ones_follow_them() -> None:
    assert check_secret(new_secret())
    for bad in ("short", "x" * 257, "é" * 20, 12, "tab\there-and-long-enough"):
        with pytest.raises(InvalidWebhook):
            check_secret(bad)


@pytest.mark.parametrize(
    ("url", "scheme", "host", "port"),
    [
        ("https://example.com/hook", "https", "example.com", 443),
        ("http://example.com:8080/x?y=1", "http", "example.com", 8080),
        ("HTTPS://[2001:db8::1]/h", "https", "2001:db8::1", 443),
    ],
)
def test_http_and_https_urls_are_accepted(url: str, scheme: str, host: str, port: int) -> None:
    target = check_url(url)
    assert (target.scheme, target.host, target.port) == (scheme, host, port)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://example.com/x", "http or https"),
        ("file:///etc/passwd", "http or https"),
        ("example.com/hook", "http or https"),
        ("https:///nohost", "no host"),
        ("https://user:pw@example.com/", "credentials"),
        ("https://example.com:99999/", "not a valid URL"),
        ("https://example.com/#frag", "fragment"),
        (42, "http or https"),
    ],
)
def test_other_urls_are_refused(url: object, message: str) -> None:
    with pytest.raises(InvalidWebhook, match=message):
        check_url(url)


@pytest.mark.parametrize(
    "address",
    ["127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254", "::1", "fe80::1", "fd00::1",
     "0.0.0.0", "::ffff:127.0.0.1", "100.64.0.1", "224.0.0.1"],
)  # fmt: skip
def test_non_public_addresses_are_blocked(address: str) -> None:
    assert blocked_address(address) is not None


@pytest.mark.parametrize("address", ["93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946", "8.8.8.8"])
def test_public_addresses_are_not(address: str) -> None:
    assert blocked_address(address) is None


def _resolver(*addresses: str):  # type: ignore[no-untyped-def]
    async def resolve(host: str, port: int) -> list[str]:
        return list(addresses)

    return resolve


def test_a_host_resolving_to_any_private_address_is_refused_unless_allowed() -> None:
    url = "https://hooks.example.com/in"
    with pytest.raises(TargetRefused, match="FLUX_WEBHOOK_ALLOW_PRIVATE"):
        asyncio.run(check_target(url, False, _resolver("93.184.216.34", "10.0.0.5")))
    target, addresses = asyncio.run(check_target(url, True, _resolver("10.0.0.5")))
    assert target.host == "hooks.example.com" and addresses == ["10.0.0.5"]
    assert asyncio.run(check_target(url, False, _resolver("93.184.216.34")))[1] == ["93.184.216.34"]


def test_an_unresolvable_host_is_refused() -> None:
    async def fails(host: str, port: int) -> list[str]:
        raise OSError("Name or service not known")

    with pytest.raises(TargetRefused, match="does not resolve"):
        asyncio.run(check_target("https://nowhere.invalid/", False, fails))


def test_a_delivery_connects_to_the_address_it_checked() -> None:
    """DNS rebinding: the host is resolved and checked at each delivery, and the request goes to that address."""
    request = asyncio.run(delivery_request("https://hooks.example.com:8443/in?a=1", False, _resolver("93.184.216.34")))
    assert request.url == "https://93.184.216.34:8443/in?a=1"
    assert request.headers == {"host": "hooks.example.com:8443"}
    assert request.extensions == {"sni_hostname": "hooks.example.com"}
    with pytest.raises(TargetRefused):  # the name now points inside: refused at delivery time too
        asyncio.run(delivery_request("https://hooks.example.com/in", False, _resolver("127.0.0.1")))
    v6 = pinned("http://h.example.com/x", check_url("http://h.example.com/x"), "2001:db8::5")
    assert v6.url == "http://[2001:db8::5]:80/x" and v6.extensions == {}


def test_the_registry_folds_registrations_pauses_reports_and_deletions() -> None:
    registry = Registry()
    assert registry.apply(*HOOK.record()) == "wh_1"
    assert registry.get("wh_1") == HOOK and registry.status("wh_1") == ACTIVE
    attempt = Attempt("dl_1", 5, 1, 3, 500, "the receiver answered HTTP 500", 12.5)
    failing = Report("n1:3000", 6, failing_since=5, last_error="HTTP 500", attempts=[attempt])
    registry.apply(*report_record("wh_1", failing, "n1:3000"))
    assert registry.status("wh_1") == FAILING
    assert registry.attempts("wh_1") == [("n1:3000", attempt)]
    registry.apply(*pause_record("wh_1", Pause(7, "too long")))
    assert registry.status("wh_1") == PAUSED
    registry.apply(*pause_record("wh_1", None))
    assert registry.status("wh_1") == FAILING
    registry.apply(*report_record("wh_1", Report("n1:3000", 8), "n1:3000"))
    assert registry.status("wh_1") == ACTIVE
    registry.apply(b"w/wh_1", None)
    assert registry.get("wh_1") is None and registry.all() == [] and not registry.reports


@pytest.mark.parametrize(("key", "value"), [(b"w/x", b"{"), (b"w/x", b'{"nope": 1}'), (b"zzz", b"{}"), (b"p/x", b"[]")])
def test_unreadable_records_are_refused(key: bytes, value: bytes) -> None:
    with pytest.raises(InvalidRecord):
        Registry().apply(key, value)


class _Consumer:
    """What :meth:`Runner._batch` uses of a consumer: seek."""

    def __init__(self) -> None:
        self.seeks: dict[TopicPartition, int] = {}

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.seeks[tp] = offset


def _record(tp: TopicPartition, offset: int, *entity_ids: str) -> ConsumerRecord:  # type: ignore[type-arg]
    changes = [EntityChange(i, offset, [["u", "t", offset, 1_700_000_000_000]], None) for i in entity_ids]
    value = encode_records(ChangeRecord(tp.partition, offset + 1, 0, 0, [], changes))[0]
    return ConsumerRecord(tp.topic, tp.partition, offset, 0, 0, None, value, None, 0, len(value), [])


def test_a_batch_keeps_the_matching_changes_and_stops_at_its_bound() -> None:
    settings = Settings(webhook_batch_changes=3)
    runner = Runner(settings, None, HOOK, HookState(deque()))  # type: ignore[arg-type]
    p0, p1 = TopicPartition("changes", 0), TopicPartition("changes", 1)
    fetched = {
        p1: [_record(p1, 7, "acme/a", "other/x"), _record(p1, 8, "other/y"), _record(p1, 9, "acme/b", "acme/c")],
        p0: [_record(p0, 3, "acme/d"), _record(p0, 4, "other/z")],
    }
    consumer = _Consumer()
    batch = runner._batch(consumer, fetched)  # type: ignore[arg-type]
    ids = [orjson.loads(m)["entity_id"] for m in batch.messages]
    assert ids == ["acme/d", "acme/a", "acme/b", "acme/c"]  # partitions in order; a record is never split
    assert batch.ranges == {0: (3, 3), 1: (7, 9)}  # the records that contributed
    assert batch.ends == {p0: 5, p1: 10}  # committed once delivered: the unmatched records too
    assert consumer.seeks == {}
    small = Runner(Settings(webhook_batch_changes=1), None, HOOK, HookState(deque()))  # type: ignore[arg-type]
    batch = small._batch(consumer, fetched)  # type: ignore[arg-type]
    assert [orjson.loads(m)["entity_id"] for m in batch.messages] == ["acme/d"]
    assert batch.ends == {p0: 4} and consumer.seeks == {p0: 4, p1: 7}  # the rest is read again


def test_a_webhook_of_a_deleted_namespace_is_orphaned() -> None:
    mine = Webhook("wh_2", "https://example.com/", "ns/*", "s" * 20, 1, "ns", "ns_1")
    assert orphaned(HOOK, None) is None  # the admin's: never
    assert orphaned(mine, "ns_1") is None
    assert "was deleted" in str(orphaned(mine, None))
    assert "was deleted" in str(orphaned(mine, "ns_2"))  # the name registered again by somebody else


class _PausingLog:
    """A webhooks log whose pause record is read back, stopping the runner, in the same step as the
    write it waits on completes (under ``asyncio.wait_for``, as in :class:`flux.kafka.compacted_log.CompactedLog`)."""

    def __init__(self) -> None:
        self.runner: Runner | None = None

    async def pause(self, webhook_id: str, reason: str) -> None:
        written = asyncio.get_running_loop().create_future()

        def read_back() -> None:
            assert self.runner is not None
            self.runner.stop()  # what WebhookDelivery does when the pause record is folded
            written.set_result(None)

        asyncio.get_running_loop().call_soon(read_back)
        await asyncio.wait_for(written, 5)


def test_a_runner_that_paused_its_webhook_ends_even_when_the_cancellation_is_lost() -> None:
    # Python 3.11's wait_for drops a cancellation arriving as its future completes; a runner that went on
    # waiting kept its consumer in the group, and the webhook, once resumed, was never delivered (CI).
    async def main() -> None:
        log = _PausingLog()
        runner = log.runner = Runner(Settings(), log, HOOK, HookState(deque()))  # type: ignore[arg-type]

        async def failing(*_: object) -> bool:
            return False

        runner._attempt = failing  # type: ignore[method-assign]
        runner.state.streak.should_pause = lambda *_: True  # type: ignore[method-assign]
        runner.task = asyncio.create_task(runner._deliver(None, None, Batch()))  # type: ignore[arg-type]
        done, _ = await asyncio.wait([runner.task], timeout=2)
        assert done, "the runner went on waiting after it was stopped"
        assert runner.task.cancelled()

    asyncio.run(main())
