"""Retries: exponential backoff with jitter, honouring ``Retry-After``, bounded by attempts and total time.

:class:`RetryPolicy` is the configuration; :class:`Attempts` follows one logical call (every HTTP
request it takes, or one outage of a subscription) and says how long to pause before the next try,
or that it is time to give up. Neither sleeps nor does I/O, so the sync and async clients and the
subscriber share them, and tests drive them with a fake clock.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class RetryPolicy:
    """How a call is retried.

    ``attempts``: most tries in all, the first included (None: no bound); ``total_s``: no retry
    starts later than this many seconds after the first try (None: no bound); the pause before the
    n-th retry is ``min(max_s, base_s * 2 ** (n - 1))``, less a random share of up to ``jitter`` of
    it, and at least the server's ``Retry-After``.
    """

    attempts: int | None = 5
    total_s: float | None = 30.0
    base_s: float = 0.25
    max_s: float = 8.0
    jitter: float = 0.5

    def __post_init__(self) -> None:
        if self.attempts is not None and self.attempts < 1:
            raise ValueError("attempts must be at least 1 (or None for no bound)")
        if not 0.0 <= self.jitter <= 1.0:
            raise ValueError("jitter must lie between 0 and 1")
        if self.base_s < 0 or self.max_s < 0:
            raise ValueError("base_s and max_s must not be negative")

    def backoff(self, retry: int, draw: Callable[[], float] = random.random) -> float:
        """The pause before the ``retry``-th retry (1 for the first), without ``Retry-After``."""
        cap = min(self.max_s, self.base_s * float(2 ** min(retry - 1, 62)))
        return cap * (1.0 - self.jitter * draw())


NO_RETRY = RetryPolicy(attempts=1)
"""Try once."""

FOREVER = RetryPolicy(attempts=None, total_s=None, base_s=0.25, max_s=5.0)
"""Keep trying, backing off up to 5 s between tries: a subscription's default for reconnecting."""


class Attempts:
    """The tries of one logical call under a :class:`RetryPolicy`."""

    def __init__(
        self,
        policy: RetryPolicy,
        clock: Callable[[], float] = time.monotonic,
        draw: Callable[[], float] = random.random,
    ) -> None:
        self.policy = policy
        self._clock = clock
        self._draw = draw
        self.started = clock()
        self.failures = 0

    def pause(self, retry_after: float | None = None) -> float | None:
        """After a failed try that may be retried: the seconds to wait before the next one, or None
        when the policy's bounds say to give up (a ``Retry-After`` beyond the time left gives up too)."""
        self.failures += 1
        policy = self.policy
        if policy.attempts is not None and self.failures >= policy.attempts:
            return None
        delay = policy.backoff(self.failures, self._draw)
        if retry_after is not None:
            delay = max(delay, retry_after)
        if policy.total_s is not None and self._clock() + delay - self.started > policy.total_s:
            return None
        return delay

    def reset(self) -> None:
        """Start counting afresh (a subscription that is back after an outage)."""
        self.started = self._clock()
        self.failures = 0
