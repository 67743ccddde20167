"""Events per minute per namespace: a token bucket per key, pure and clock-injected.

Each key's bucket holds up to ``per_minute`` events and refills continuously at
``per_minute / 60`` events per second, so a namespace may burst up to its minute's allowance and
then sustain the rate. A request takes all the events it needs or none.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable


class RateLimiter:
    """Token buckets by key (namespace names: registered, so bounded); :meth:`take` answers how long
    to wait when a request does not fit."""

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_minute = per_minute
        self._rate = per_minute / 60.0
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, when)

    def _level(self, key: str, now: float) -> float:
        tokens, when = self._buckets.get(key, (float(self.per_minute), now))
        return min(float(self.per_minute), tokens + (now - when) * self._rate)

    def take(self, key: str, events: int) -> float:
        """Take ``events`` from ``key``'s bucket and return 0, or take nothing and return the seconds
        after which they would fit (``math.inf`` if they never can: more than a minute's allowance)."""
        if events > self.per_minute:
            return math.inf
        now = self._clock()
        level = self._level(key, now)
        if level >= events:
            self._buckets[key] = (level - events, now)
            return 0.0
        return (events - level) / self._rate
