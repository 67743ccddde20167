"""Process metrics: the active publishers' window forgets sources on writes too, and stays bounded."""

from __future__ import annotations

import pytest

from flux import metrics
from flux.metrics import RecentSources


class Clock:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(metrics.time, "monotonic", clock)
    return clock


def tracked(sources: RecentSources) -> int:
    """How many sources are held in memory (without the pruning a read does)."""
    return len(sources._seen)


def test_sources_that_age_out_are_forgotten_on_the_next_write_without_a_read(clock: Clock) -> None:
    sources = RecentSources(window_s=60)
    sources.saw(f"old-{i}" for i in range(1_000))
    clock.now += 30
    sources.saw(["middle"])
    clock.now += 31  # the first thousand are out of the window, "middle" is not
    sources.saw(["new"])
    assert tracked(sources) == 2
    assert sources.active() == 2
    clock.now += 30
    assert sources.active() == 1  # "middle" aged out; a read forgets too


def test_a_source_seen_again_stays_for_another_window(clock: Clock) -> None:
    sources = RecentSources(window_s=60)
    sources.saw(["a", "b"])
    clock.now += 50
    sources.saw(["a"])
    clock.now += 20
    assert sources.active() == 1


def test_at_most_the_limit_of_sources_is_held_however_many_publish_within_the_window(clock: Clock) -> None:
    sources = RecentSources(window_s=60, limit=100)
    for batch in range(50):
        sources.saw(f"s-{batch}-{i}" for i in range(30))
        assert tracked(sources) <= 100
    assert sources.active() == 100
    sources.saw(["latest"])
    assert "latest" in sources._seen and tracked(sources) == 100  # the oldest made room
