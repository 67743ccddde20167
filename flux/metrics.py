"""Process metrics: counters for Prometheus (``GET /metrics``) and the WebSocket metrics message."""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

PUBLISHER_WINDOW_S = 60.0
MAX_TRACKED_SOURCES = 10_000
RATE_WINDOW_S = 10.0


class RecentSources:
    """Distinct event sources seen within the last minute, telling at most ``limit`` apart.

    Sources are forgotten as they age out of the window on every write as well as on every read,
    oldest first, and beyond ``limit`` the oldest go early: memory stays bounded (``limit`` sources
    of at most ``FLUX_MAX_STREAM_SOURCE_LENGTH`` characters) whether or not anybody asks for the count.
    """

    def __init__(self, window_s: float = PUBLISHER_WINDOW_S, limit: int = MAX_TRACKED_SOURCES) -> None:
        self._window_s = window_s
        self._limit = limit
        self._seen: OrderedDict[str, float] = OrderedDict()  # source -> last seen, the oldest first

    def saw(self, sources: Iterable[str]) -> None:
        """Record that these sources published just now."""
        now = time.monotonic()
        seen = self._seen
        for source in sources:
            seen[source] = now
            seen.move_to_end(source)
        self._forget(now)

    def active(self) -> int:
        """How many distinct sources were seen within the window (at most ``limit``)."""
        self._forget(time.monotonic())
        return len(self._seen)

    def _forget(self, now: float) -> None:
        """Drop the sources last seen before the window, and the oldest beyond ``limit``."""
        seen = self._seen
        cutoff = now - self._window_s
        while seen and (len(seen) > self._limit or seen[next(iter(seen))] < cutoff):
            seen.popitem(last=False)


class RateMeter:
    """The rate of a growing total over the last few seconds."""

    def __init__(self, window_s: float = RATE_WINDOW_S) -> None:
        self._window_s = window_s
        self._samples: deque[tuple[float, int]] = deque()

    def rate(self, total: int) -> float:
        """Per-second growth of ``total`` since the oldest sample in the window (samples ``total`` too)."""
        now = time.monotonic()
        samples = self._samples
        samples.append((now, total))
        while len(samples) > 1 and samples[0][0] < now - self._window_s:
            samples.popleft()
        first_t, first_n = samples[0]
        return 0.0 if now - first_t <= 0 else max(0.0, (total - first_n) / (now - first_t))


@dataclass(frozen=True)
class WorkerCounters:
    """What one HTTP process counted, as it reports it to the reducer process (see :mod:`api.workers`)."""

    published: int = 0
    publishers_active: int = 0
    websocket_connections: int = 0
    websocket_dropped: int = 0

    def to_json(self) -> dict[str, int]:
        """The counters as a JSON object."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: Any) -> WorkerCounters:
        """Counters from :meth:`to_json`'s form (unknown or malformed fields count 0)."""
        fields = {name: data.get(name) for name in cls.__dataclass_fields__} if isinstance(data, dict) else {}
        return cls(**{name: value for name, value in fields.items() if type(value) is int})


class Metrics:
    """Counters of one Flux process; cheap enough to touch on every request.

    In the reducer process, ``workers`` holds what each HTTP process last reported: the
    exposition adds them up, so any process's ``/metrics`` shows the whole node.
    """

    def __init__(self) -> None:
        self.events_published = 0
        self.events_applied = 0
        self.events_rejected = 0
        self.events_duplicate = 0
        self.websocket_connections = 0
        self.websocket_dropped = 0
        self.partition_stalls = 0
        self.fenced_batches = 0
        self._sources = RecentSources()
        self.workers: dict[int, WorkerCounters] = {}

    def counters(self) -> WorkerCounters:
        """This process's own request-side counters (what an HTTP process reports)."""
        return WorkerCounters(
            self.events_published, self.active_publishers(), self.websocket_connections, self.websocket_dropped
        )

    def published(self, count: int, sources: Iterable[str]) -> None:
        """Record ``count`` events acknowledged by the broker, from these sources."""
        self.events_published += count
        self._sources.saw(sources)

    def applied(self, count: int) -> None:
        """Record ``count`` events folded into the table."""
        self.events_applied += count

    def duplicates(self, count: int) -> None:
        """Record ``count`` re-sent events (an eventId the entity already has) skipped by the agents."""
        self.events_duplicate += count

    def rejected(self, count: int) -> None:
        """Record ``count`` records sent to the dead-letter topic."""
        self.events_rejected += count

    def stalled(self, count: int) -> None:
        """Record ``count`` partitions found not advancing while the log had records for them."""
        self.partition_stalls += count

    def active_publishers(self) -> int:
        """Distinct sources published through this process in the last minute."""
        return self._sources.active()

    def prometheus(self, entities: int) -> str:
        """The Prometheus text exposition of these counters."""
        workers = list(self.workers.values())
        published = self.events_published + sum(w.published for w in workers)
        publishers = self.active_publishers() + sum(w.publishers_active for w in workers)
        connections = self.websocket_connections + sum(w.websocket_connections for w in workers)
        dropped = self.websocket_dropped + sum(w.websocket_dropped for w in workers)
        lines = [
            "# HELP flux_events_published_total Events acknowledged by the broker through this node.",
            "# TYPE flux_events_published_total counter",
            f"flux_events_published_total {published}",
            "# HELP flux_events_applied_total Events folded into the table by this process's agents.",
            "# TYPE flux_events_applied_total counter",
            f"flux_events_applied_total {self.events_applied}",
            "# HELP flux_events_rejected_total Invalid records sent to the dead-letter topic.",
            "# TYPE flux_events_rejected_total counter",
            f"flux_events_rejected_total {self.events_rejected}",
            "# HELP flux_events_duplicate_total Re-sent events (known eventId) applied and stored only once.",
            "# TYPE flux_events_duplicate_total counter",
            f"flux_events_duplicate_total {self.events_duplicate}",
            "# HELP flux_partition_stalls_total Served partitions found not advancing behind the log (let flow again).",
            "# TYPE flux_partition_stalls_total counter",
            f"flux_partition_stalls_total {self.partition_stalls}",
            "# HELP flux_fenced_batches_total Batches dropped unwritten: this node had left the group while frozen.",
            "# TYPE flux_fenced_batches_total counter",
            f"flux_fenced_batches_total {self.fenced_batches}",
            "# HELP flux_entities Entities in the partitions this process serves.",
            "# TYPE flux_entities gauge",
            f"flux_entities {entities}",
            "# HELP flux_publishers_active Distinct event sources seen in the last minute.",
            "# TYPE flux_publishers_active gauge",
            f"flux_publishers_active {publishers}",
            "# HELP flux_websocket_connections Open WebSocket connections on this node.",
            "# TYPE flux_websocket_connections gauge",
            f"flux_websocket_connections {connections}",
            "# HELP flux_websocket_dropped_total WebSocket connections closed for falling behind.",
            "# TYPE flux_websocket_dropped_total counter",
            f"flux_websocket_dropped_total {dropped}",
        ]
        return "\n".join(lines) + "\n"
