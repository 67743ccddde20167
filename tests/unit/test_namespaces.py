"""Namespace rules, tokens and the registry fold (pure: no Kafka)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flux.model.namespaces import (
    InvalidName,
    InvalidRecord,
    Namespace,
    Registry,
    check_name,
    decode_record,
    encode_record,
    hash_token,
    namespace_of,
    new_token,
)
from flux.rate_limit import RateLimiter


def _namespace(name: str, namespace_id: str = "ns_1", token: str = "secret") -> Namespace:
    return Namespace(namespace_id, name, 1_700_000_000_000, hash_token(token))


@pytest.mark.parametrize("name", ["abc", "acme", "my-project", "a_b-c", "x" * 32, "123"])
def test_names_of_3_to_32_lowercase_letters_digits_dash_underscore_are_accepted(name: str) -> None:
    assert check_name(name) == name


@pytest.mark.parametrize("name", ["ab", "x" * 33, "Acme", "ac me", "acme/x", "é-ns", "", "acme\n", 42, None])
def test_other_names_are_refused_with_the_rule(name: object) -> None:
    with pytest.raises(InvalidName, match="3-32 characters of a-z, 0-9"):
        check_name(name)


def test_tokens_carry_256_random_bits_and_differ() -> None:
    tokens = {new_token() for _ in range(100)}
    assert len(tokens) == 100
    for token in tokens:
        assert token.startswith("flux_") and len(token) - len("flux_") >= 43  # 32 bytes in URL-safe base64


def test_only_a_hash_of_the_token_is_in_the_record() -> None:
    token = new_token()
    namespace = Namespace("ns_1", "acme", 1, hash_token(token))
    key, value = encode_record(namespace)
    assert key == b"acme" and token.encode() not in value
    assert decode_record(value) == namespace


def test_unreadable_records_are_refused() -> None:
    for value in (b"not json", b"{}", b'{"namespaceId":"x","name":"BAD","createdAt":1,"tokenHash":"h"}'):
        with pytest.raises(InvalidRecord):
            decode_record(value)


def test_namespace_of_an_id_is_the_part_before_the_first_slash() -> None:
    assert namespace_of("acme/sensor-01") == "acme"
    assert namespace_of("acme/a/b") == "acme"
    assert namespace_of("sensor-01") is None
    assert namespace_of("/x") is None


def test_registry_authenticates_a_token_to_its_namespace_only() -> None:
    registry = Registry()
    registry.apply(*encode_record(_namespace("acme", token="t-acme")))
    registry.apply(*encode_record(_namespace("beta", "ns_2", token="t-beta")))
    found = registry.authenticate("t-acme")
    assert found is not None and found.name == "acme"
    assert registry.authenticate("t-acm") is None
    assert registry.authenticate("") is None


def test_first_registration_of_a_name_wins_a_race() -> None:
    registry = Registry()
    registry.apply(*encode_record(_namespace("acme", "ns_first", token="first")))
    registry.apply(*encode_record(_namespace("acme", "ns_second", token="second")))
    holder = registry.holder("acme")
    assert holder is not None and holder.namespace_id == "ns_first"
    assert registry.authenticate("second") is None


def test_a_new_token_replaces_the_old_one() -> None:
    registry = Registry()
    registry.apply(*encode_record(_namespace("acme", token="old")))
    registry.apply(*encode_record(_namespace("acme", token="new")))
    assert registry.authenticate("old") is None
    assert registry.authenticate("new") is not None


def test_deletion_frees_the_name_and_voids_the_token() -> None:
    registry = Registry()
    registry.apply(*encode_record(_namespace("acme", "ns_1", token="t1")))
    registry.apply(b"acme", None)
    assert registry.holder("acme") is None and registry.authenticate("t1") is None
    registry.apply(*encode_record(_namespace("acme", "ns_2", token="t2")))
    holder = registry.holder("acme")
    assert holder is not None and holder.namespace_id == "ns_2"


def test_a_record_whose_key_is_not_its_name_is_refused() -> None:
    _, value = encode_record(_namespace("acme"))
    with pytest.raises(InvalidRecord):
        Registry().apply(b"beta", value)


@given(st.lists(st.tuples(st.sampled_from(["aaa", "bbb", "ccc"]), st.integers(0, 3), st.booleans()), max_size=40))
def test_every_live_namespace_authenticates_by_its_latest_token_and_no_other(
    ops: list[tuple[str, int, bool]],
) -> None:
    registry = Registry()
    expected: dict[str, tuple[str, str]] = {}  # name -> (namespace id, token)
    for step, (name, owner, delete) in enumerate(ops):
        if delete:
            registry.apply(name.encode(), None)
            expected.pop(name, None)
            continue
        token = f"token-{step}"
        namespace_id = f"ns_{owner}"
        registry.apply(*encode_record(_namespace(name, namespace_id, token)))
        if name not in expected or expected[name][0] == namespace_id:
            expected[name] = (namespace_id, token)
    assert [ns.name for ns in registry.all()] == sorted(expected)
    for step in range(len(ops)):
        found = registry.authenticate(f"token-{step}")
        live = [name for name, (_, token) in expected.items() if token == f"token-{step}"]
        assert (found.name if found else None) == (live[0] if live else None)


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_namespace_may_burst_its_minute_then_waits_for_the_refill() -> None:
    clock = FakeClock()
    limiter = RateLimiter(600, clock)  # 10 events per second
    assert limiter.take("acme", 600) == 0
    assert limiter.take("acme", 10) == pytest.approx(1.0)
    clock.now = 1.0
    assert limiter.take("acme", 10) == 0
    assert limiter.take("acme", 1) > 0


def test_namespaces_have_separate_allowances() -> None:
    limiter = RateLimiter(100, FakeClock())
    assert limiter.take("acme", 100) == 0
    assert limiter.take("beta", 100) == 0
    assert limiter.take("acme", 1) > 0


def test_a_refused_request_takes_nothing() -> None:
    limiter = RateLimiter(100, FakeClock())
    assert limiter.take("acme", 90) == 0
    assert limiter.take("acme", 20) > 0
    assert limiter.take("acme", 10) == 0


def test_a_request_larger_than_a_minute_never_fits() -> None:
    assert math.isinf(RateLimiter(100, FakeClock()).take("acme", 101))


def test_the_allowance_never_grows_past_one_minute() -> None:
    clock = FakeClock()
    limiter = RateLimiter(60, clock)
    clock.now = 3600.0
    assert limiter.take("acme", 60) == 0
    assert limiter.take("acme", 1) > 0
