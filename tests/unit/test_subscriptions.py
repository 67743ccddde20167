"""Subscription patterns and their index: which subscribers an entity id reaches."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from api.live.subscriptions import Pattern, SubscriptionIndex


def test_star_is_every_entity_and_a_trailing_star_is_a_prefix():
    assert Pattern.parse("*").matches("anything/at-all")
    assert Pattern.parse("acme/*").matches("acme/sensor-01")
    assert not Pattern.parse("acme/*").matches("acmex/sensor-01")
    assert Pattern.parse("sensor-*").matches("sensor-7")


def test_a_pattern_without_a_star_matches_only_that_id():
    exact = Pattern.parse("acme/sensor-01")
    assert exact.matches("acme/sensor-01")
    assert not exact.matches("acme/sensor-011")


def test_index_finds_exact_prefix_and_wildcard_subscribers_and_forgets_removed_ones():
    index: SubscriptionIndex[str] = SubscriptionIndex()
    index.add(Pattern.parse("a/1"), "exact")
    index.add(Pattern.parse("a/*"), "prefix")
    index.add(Pattern.parse("*"), "all")
    index.add(Pattern.parse("b/*"), "other")
    assert sorted(index.match("a/1")) == ["all", "exact", "prefix"]
    assert sorted(index.match("b/2")) == ["all", "other"]
    index.remove(Pattern.parse("a/*"), "prefix")
    index.remove(Pattern.parse("a/*"), "never-added")
    assert sorted(index.match("a/1")) == ["all", "exact"]
    assert len(index) == 3


@given(
    st.lists(
        st.tuples(st.booleans(), st.sampled_from(["*", "a*", "ab*", "a/b*", "a", "ab", "b*", "abc"]), st.integers(0, 3))
    ),
    st.sampled_from(["", "a", "ab", "abc", "a/b/c", "b", "zz"]),
)
def test_index_matches_what_checking_every_pattern_would(operations, entity_id):
    index: SubscriptionIndex[int] = SubscriptionIndex()
    live: set[tuple[str, int]] = set()
    for adding, text, subscriber in operations:
        if adding:
            index.add(Pattern.parse(text), subscriber)
            live.add((text, subscriber))
        else:
            index.remove(Pattern.parse(text), subscriber)
            live.discard((text, subscriber))
    expected = sorted(s for text, s in live if Pattern.parse(text).matches(entity_id))
    assert sorted(index.match(entity_id)) == expected
    assert bool(index) == bool(live)
