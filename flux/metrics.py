"""Process metrics: counters for Prometheus (``GET /metrics``) and the WebSocket metrics message."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterable

PUBLISHER_WINDOW_S = 60.0
RATE_WINDOW_S = 10.0


class Metrics:
    """Counters of one Flux process; cheap enough to touch on every request."""

    def __init__(self) -> None:
        self.events_published = 0
        self.events_applied = 0
        self.events_rejected = 0
        self.batches_published = 0
        self.http_errors: dict[int, int] = {}
        self._sources: dict[str, float] = {}
        self._applied_samples: deque[tuple[float, int]] = deque()

    def published(self, count: int, sources: Iterable[str]) -> None:
        """Record ``count`` events acknowledged by the broker, from these sources."""
        self.events_published += count
        now = time.monotonic()
        for source in sources:
            self._sources[source] = now

    def applied(self, count: int) -> None:
        """Record ``count`` events folded into the table."""
        self.events_applied += count

    def rejected(self, count: int) -> None:
        """Record ``count`` records sent to the dead-letter topic."""
        self.events_rejected += count

    def active_publishers(self) -> int:
        """Distinct sources seen in the last minute."""
        cutoff = time.monotonic() - PUBLISHER_WINDOW_S
        for source in [s for s, seen in self._sources.items() if seen < cutoff]:
            del self._sources[source]
        return len(self._sources)

    def apply_rate(self) -> float:
        """Events applied per second over the last few seconds."""
        now = time.monotonic()
        samples = self._applied_samples
        samples.append((now, self.events_applied))
        while len(samples) > 1 and samples[0][0] < now - RATE_WINDOW_S:
            samples.popleft()
        first_t, first_n = samples[0]
        return 0.0 if now - first_t <= 0 else (self.events_applied - first_n) / (now - first_t)

    def prometheus(self, entities: int) -> str:
        """The Prometheus text exposition of these counters."""
        lines = [
            "# HELP flux_events_published_total Events acknowledged by the broker through this process.",
            "# TYPE flux_events_published_total counter",
            f"flux_events_published_total {self.events_published}",
            "# HELP flux_events_applied_total Events folded into the table by this process's agents.",
            "# TYPE flux_events_applied_total counter",
            f"flux_events_applied_total {self.events_applied}",
            "# HELP flux_events_rejected_total Invalid records sent to the dead-letter topic.",
            "# TYPE flux_events_rejected_total counter",
            f"flux_events_rejected_total {self.events_rejected}",
            "# HELP flux_entities Entities in the partitions this process serves.",
            "# TYPE flux_entities gauge",
            f"flux_entities {entities}",
            "# HELP flux_publishers_active Distinct event sources seen in the last minute.",
            "# TYPE flux_publishers_active gauge",
            f"flux_publishers_active {self.active_publishers()}",
        ]
        return "\n".join(lines) + "\n"
