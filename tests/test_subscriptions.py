"""Subscription patterns and their index: which subscribers an entity id reaches."""

from __future__ import annotations

from api.subscriptions import Pattern, SubscriptionIndex


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
