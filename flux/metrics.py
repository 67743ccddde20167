"""Process metrics: counters for Prometheus (``GET /metrics``) and the WebSocket metrics message."""

from __future__ import annotations

import math
import os
import time
from bisect import bisect_left
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple

from flux.model.changes import ChangeRecord

PUBLISHER_WINDOW_S = 60.0
MAX_TRACKED_SOURCES = 10_000
RATE_WINDOW_S = 10.0
LATENCY_BUCKETS_MS = (1, 2, 5, 10, 25, 50, 100, 200, 500, 1000, 2500, 5000, 10000)
MAX_REQUEST_SERIES = 300  # (route, method, status) series an HTTP process tells apart; the rest count as "other"

# The histograms an HTTP process keeps, by series key: the name, then the label values.
SeriesKey = tuple[str, ...]
PUBLISH = ("publish",)  # ms to answer POST /api/events and /api/events/batch (2xx)
RELAYED = ("relay",)  # ms from an event's record timestamp to its change handed to the WebSocket hub
REQUEST = "http"  # ("http", route template, method, status): ms to answer an HTTP request


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


class AppliedLag(NamedTuple):
    """How far one partition's table is behind its events topic (see :mod:`agents.applied_lag`)."""

    records: int  # offsets between the first one the table does not hold and the log's last stable offset
    ms: float  # how long the oldest committed record the table does not hold has been in the log


class Histogram:
    """A Prometheus histogram whose observations come in lumps: one value, counted ``weight`` times.

    ``bounds`` are the upper bounds of the buckets (``le``), ascending; a last ``+Inf`` bucket is implied.
    Counts are kept per bucket and made cumulative only when rendered.
    """

    def __init__(self, bounds: Iterable[float] = LATENCY_BUCKETS_MS) -> None:
        self.bounds: tuple[float, ...] = tuple(bounds)
        self.buckets = [0] * (len(self.bounds) + 1)  # the last one is +Inf
        self.count = 0
        self.sum = 0.0

    def observe(self, value: float, weight: int = 1) -> None:
        """Count ``value`` ``weight`` times (a value on a bound falls in that bound's bucket, as ``le`` says)."""
        if weight <= 0:
            return
        self.buckets[bisect_left(self.bounds, value)] += weight
        self.count += weight
        self.sum += value * weight

    def add(self, other: Histogram) -> None:
        """Add ``other``'s counts (same bounds) to these."""
        for i, count in enumerate(other.buckets):
            self.buckets[i] += count
        self.count += other.count
        self.sum += other.sum

    def cumulative(self) -> list[tuple[float, int]]:
        """``(le, count of observations <= le)`` per bucket, the last ``le`` being ``inf``."""
        total = 0
        out = []
        for bound, count in zip((*self.bounds, math.inf), self.buckets, strict=True):
            total += count
            out.append((bound, total))
        return out

    def to_json(self) -> list[Any]:
        """The wire form: ``[[per-bucket counts], sum]`` (the count is their total)."""
        return [list(self.buckets), round(self.sum, 3)]

    @classmethod
    def from_json(cls, data: Any, bounds: Iterable[float] = LATENCY_BUCKETS_MS) -> Histogram | None:
        """A histogram from :meth:`to_json`'s form, or None when ``data`` is not one (for ``bounds``)."""
        histogram = cls(bounds)
        if not (isinstance(data, list) and len(data) == 2 and isinstance(data[0], list)):
            return None
        buckets, total = data
        if len(buckets) != len(histogram.buckets) or not all(type(n) is int and n >= 0 for n in buckets):
            return None
        if type(total) not in (int, float):
            return None
        histogram.buckets = list(buckets)
        histogram.count = sum(buckets)
        histogram.sum = float(total)
        return histogram


@dataclass(frozen=True)
class WorkerCounters:
    """What one HTTP process counted, as it reports it to the reducer process (see :mod:`api.workers`).

    ``histograms`` hold its latency histograms by series key (``PUBLISH``, ``RELAYED``, ``("http", route,
    method, status)``); a sync carries only the series that changed since the last one the reducer took,
    and the reducer keeps the rest (:class:`api.workers.control.WorkerRoster`).
    """

    published: int = 0
    publishers_active: int = 0
    websocket_connections: int = 0
    websocket_dropped: int = 0
    relay_lag_records: int | None = None  # change-feed records not relayed yet (None: no relay)
    rss_bytes: int = 0
    cpu_seconds: float = 0.0
    histograms: Mapping[SeriesKey, Histogram] = field(default_factory=dict, compare=False)

    def to_json(self, series: Iterable[SeriesKey] | None = None) -> dict[str, Any]:
        """The counters as a JSON object, with the histograms of ``series`` (default: all)."""
        keys = self.histograms.keys() if series is None else series
        return {
            "published": self.published,
            "publishers_active": self.publishers_active,
            "websocket_connections": self.websocket_connections,
            "websocket_dropped": self.websocket_dropped,
            "relay_lag_records": self.relay_lag_records,
            "rss_bytes": self.rss_bytes,
            "cpu_seconds": round(self.cpu_seconds, 3),
            "histograms": [[list(key), self.histograms[key].to_json()] for key in keys],
        }

    @classmethod
    def from_json(cls, data: Any) -> WorkerCounters:
        """Counters from :meth:`to_json`'s form (unknown or malformed fields count 0, or are left out)."""
        if not isinstance(data, dict):
            return cls()
        ints = {name: data.get(name) for name in ("published", "publishers_active", "websocket_connections")}
        ints |= {name: data.get(name) for name in ("websocket_dropped", "rss_bytes")}
        fields: dict[str, Any] = {name: value for name, value in ints.items() if type(value) is int}
        if type(data.get("relay_lag_records")) is int:
            fields["relay_lag_records"] = data["relay_lag_records"]
        if type(data.get("cpu_seconds")) in (int, float):
            fields["cpu_seconds"] = float(data["cpu_seconds"])
        histograms = {}
        for item in data.get("histograms") or ():
            if isinstance(item, list) and len(item) == 2 and isinstance(item[0], list) and item[0]:
                histogram = Histogram.from_json(item[1])
                if histogram is not None and all(isinstance(label, str) for label in item[0]):
                    histograms[tuple(item[0])] = histogram
        return cls(**fields, histograms=histograms)


def process_usage() -> tuple[int, float]:
    """This process's resident memory (bytes; 0 where ``/proc`` is missing) and CPU time (seconds)."""
    times = os.times()
    try:
        with open("/proc/self/statm", "rb") as statm:
            rss = int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        rss = 0
    return rss, times.user + times.system


class Metrics:
    """Counters of one Flux process; cheap enough to touch on every request.

    Nothing is formatted until a scrape: :mod:`flux.prometheus` reads these then. In the reducer
    process, ``workers`` holds what each HTTP process last reported and ``retired`` what the ended ones
    had counted: the exposition adds them up, so any process's ``/metrics`` shows the whole node.
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
        self.source_records = 0  # records of FLUX_SOURCE_TOPICS routed to the events topic (flux.kafka.source_router)
        self.applied_latency = Histogram()  # ms from a record's timestamp to its batch's table write, per event
        self.applied_lag: dict[int, AppliedLag] = {}  # served partition -> lag (set by agents.applied_lag)
        self.standby_lag: dict[int, int] = {}  # standby partition -> changelog records behind (agents.applied_lag)
        self.series: dict[SeriesKey, Histogram] = {}  # the HTTP side's histograms (see WorkerCounters)
        self.relay_lag: Callable[[], int] | None = None  # change-feed records not relayed yet, where a relay runs
        self._sources = RecentSources()
        self.workers: dict[int, WorkerCounters] = {}
        self.retired = WorkerCounters()  # the cumulative counts of HTTP processes that ended, added up

    def counters(self) -> WorkerCounters:
        """This process's own request-side counters (what an HTTP process reports)."""
        rss, cpu = process_usage()
        return WorkerCounters(
            self.events_published,
            self.active_publishers(),
            self.websocket_connections,
            self.websocket_dropped,
            None if self.relay_lag is None else self.relay_lag(),
            rss,
            cpu,
            self.series,
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

    def routed(self, count: int) -> None:
        """Record ``count`` source-topic records written to the events topic (or the dead letters) and committed."""
        self.source_records += count

    def stalled(self, count: int) -> None:
        """Record ``count`` partitions found not advancing while the log had records for them."""
        self.partition_stalls += count

    def applied_since(self, timestamp_ms: float, count: int, now_ms: float | None = None) -> None:
        """Record ``count`` events written to the table now (``now_ms``, default the clock) whose records
        bear ``timestamp_ms`` (Kafka's record timestamp); a record from the future counts as 0 ms."""
        now = time.time() * 1000 if now_ms is None else now_ms
        self.applied_latency.observe(max(0.0, now - timestamp_ms), count)

    def observe(self, key: SeriesKey, ms: float) -> None:
        """Count one observation of ``ms`` in the HTTP side's histogram ``key``."""
        histogram = self.series.get(key)
        if histogram is None:
            if key[0] == REQUEST and len(self.series) >= MAX_REQUEST_SERIES:
                key = (REQUEST, "other", "other", "other")
            histogram = self.series.setdefault(key, Histogram())
        histogram.observe(ms)

    def relayed(self, record: ChangeRecord, now_ms: float | None = None) -> None:
        """Record a change handed to the WebSocket hub: ms since its newest event's record timestamp."""
        if record.source_ms > 0:
            now = time.time() * 1000 if now_ms is None else now_ms
            self.observe(RELAYED, max(0.0, now - record.source_ms))

    def lag(self, partitions: Mapping[int, AppliedLag]) -> None:
        """Replace the lag of the served partitions: a partition not in ``partitions`` is not shown any more."""
        self.applied_lag = dict(partitions)

    def active_publishers(self) -> int:
        """Distinct sources published through this process in the last minute."""
        return self._sources.active()

    def report(self, index: int, counters: WorkerCounters) -> None:
        """Take HTTP process ``index``'s sync: its histograms not in it are the ones it sent before."""
        last = self.workers.get(index)
        if last is not None and last.histograms:
            counters = replace(counters, histograms={**last.histograms, **counters.histograms})
        self.workers[index] = counters

    def retire(self, index: int) -> None:
        """HTTP process ``index`` ended: keep what it counted (published, dropped, histograms), so totals
        never go backwards when a new process takes its place; its gauges go."""
        last = self.workers.pop(index, None)
        if last is None:
            return
        histograms = {key: copy_histogram(h) for key, h in self.retired.histograms.items()}
        for key, histogram in last.histograms.items():
            histograms.setdefault(key, Histogram(histogram.bounds)).add(histogram)
        self.retired = WorkerCounters(
            published=self.retired.published + last.published,
            websocket_dropped=self.retired.websocket_dropped + last.websocket_dropped,
            histograms=histograms,
        )


def copy_histogram(histogram: Histogram) -> Histogram:
    """A histogram with ``histogram``'s counts, independent of it."""
    copy = Histogram(histogram.bounds)
    copy.add(histogram)
    return copy
