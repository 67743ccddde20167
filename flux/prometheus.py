"""``GET /metrics``: Flux's counters through prometheus_client, read at scrape time.

:class:`FluxCollector` is a prometheus_client custom collector: nothing is registered on a hot
path; the counters of :class:`flux.metrics.Metrics` (and what the node's HTTP processes last
reported) become metric families only when a scrape asks. :func:`exposition` negotiates the
format from the scrape's ``Accept`` header (Prometheus text 0.0.4, or OpenMetrics), and adds the
process's own process and garbage-collector metrics (prometheus_client's ``ProcessCollector`` and
``GCCollector``, unlabelled: the process that answers, the reducer process in a node with HTTP
processes); each HTTP process's memory and CPU come as ``flux_http_process_*{process="http-N"}``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector, CollectorRegistry

from flux.metrics import PUBLISH, RELAYED, REQUEST, Histogram, Metrics, SeriesKey, WorkerCounters, copy_histogram

APPLIED_LATENCY_HELP = (
    "Milliseconds from an event's Kafka record timestamp to the write of its batch to the table, per "
    "event (the batch's oldest record per partition stands for all its events: an upper bound)."
)


def _le(bound: float) -> str:
    """A bucket bound as Prometheus text: ``+Inf``, and integral bounds without a fraction (``le="5"``)."""
    if bound == math.inf:
        return "+Inf"
    return str(int(bound)) if float(bound).is_integer() else repr(float(bound))


def _buckets(histogram: Histogram) -> list[tuple[str, float]]:
    return [(_le(bound), count) for bound, count in histogram.cumulative()]


def _counter(name: str, help_text: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, help_text, value=value)


def _gauge(name: str, help_text: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, help_text, value=value)


def node_histograms(metrics: Metrics) -> dict[SeriesKey, Histogram]:
    """The HTTP side's histograms of the whole node: this process's, every HTTP process's, the ended ones'."""
    total: dict[SeriesKey, Histogram] = {}
    for part in (metrics.series, metrics.retired.histograms, *(w.histograms for w in metrics.workers.values())):
        for key, histogram in part.items():
            mine = total.get(key)
            if mine is None:
                total[key] = copy_histogram(histogram)
            else:
                mine.add(histogram)
    return total


class FluxCollector(Collector):
    """Flux's metrics, from ``metrics`` and the number of ``entities``, at each scrape (see the module)."""

    def __init__(self, metrics: Metrics, entities: int) -> None:
        self._metrics = metrics
        self._entities = entities

    def collect(self) -> Iterable[Metric]:
        """The metric families, the existing ones first in their order."""
        m = self._metrics
        workers: list[WorkerCounters] = [*m.workers.values(), m.retired]
        yield from self._counters(m, workers)
        yield HistogramMetricFamily(
            "flux_applied_latency_ms",
            APPLIED_LATENCY_HELP,
            buckets=_buckets(m.applied_latency),
            sum_value=m.applied_latency.sum,
        )
        yield from self._lags(m)
        yield from self._http_side(m)
        yield from self._http_processes(m)

    def _counters(self, m: Metrics, workers: list[WorkerCounters]) -> Iterator[Metric]:
        yield _counter(
            "flux_events_published_total",
            "Events acknowledged by the broker through this node.",
            m.events_published + sum(w.published for w in workers),
        )
        yield _counter(
            "flux_events_applied_total", "Events folded into the table by this process's agents.", m.events_applied
        )
        yield _counter(
            "flux_events_rejected_total",
            "Invalid records and events over an entity cap (dead-letter topic).",
            m.events_rejected,
        )
        yield _counter(
            "flux_events_duplicate_total",
            "Re-sent events (known eventId) applied and stored only once.",
            m.events_duplicate,
        )
        yield _counter(
            "flux_source_records_total",
            "Records of the source topics (FLUX_SOURCE_TOPICS) routed to the events topic or the dead letters, "
            "and committed.",
            m.source_records,
        )
        yield _counter(
            "flux_partition_stalls_total",
            "Served partitions found not advancing behind the log (let flow again).",
            m.partition_stalls,
        )
        yield _counter(
            "flux_fenced_batches_total",
            "Batches dropped unwritten: this node had left the group while frozen.",
            m.fenced_batches,
        )
        yield _gauge("flux_entities", "Entities in the partitions this process serves.", self._entities)
        yield _gauge(
            "flux_publishers_active",
            "Distinct event sources seen in the last minute.",
            m.active_publishers() + sum(w.publishers_active for w in workers),
        )
        yield _gauge(
            "flux_websocket_connections",
            "Open WebSocket connections on this node.",
            m.websocket_connections + sum(w.websocket_connections for w in workers),
        )
        yield _counter(
            "flux_websocket_dropped_total",
            "WebSocket connections closed for falling behind.",
            m.websocket_dropped + sum(w.websocket_dropped for w in workers),
        )

    def _lags(self, m: Metrics) -> Iterator[Metric]:
        lag = sorted(m.applied_lag.items())
        records = GaugeMetricFamily(
            "flux_applied_lag_records",
            "Events-topic offsets of a served partition not folded into the table yet: last stable offset minus "
            "the table's position (0 when only transaction markers remain).",
            labels=["partition"],
        )
        ms = GaugeMetricFamily(
            "flux_applied_lag_ms",
            "Milliseconds the oldest committed record of a served partition not folded into the table yet has "
            "been in the log (now minus its record timestamp; 0 when caught up).",
            labels=["partition"],
        )
        for partition, behind in lag:
            records.add_metric([str(partition)], behind.records)
            ms.add_metric([str(partition)], behind.ms)
        yield records
        yield ms
        standby = GaugeMetricFamily(
            "flux_standby_lag_records",
            "Changelog records a standby copy of a partition (FLUX_STANDBY_REPLICAS) is behind, as of its last fetch.",
            labels=["partition"],
        )
        for partition, records_behind in sorted(m.standby_lag.items()):
            standby.add_metric([str(partition)], records_behind)
        yield standby
        relay = GaugeMetricFamily(
            "flux_relay_lag_records",
            "Change-feed records not yet relayed to WebSocket subscribers, per process that relays: the "
            "changes topic's high watermarks minus the relay's positions, as of its last fetch.",
            labels=["process"],
        )
        if m.relay_lag is not None:
            relay.add_metric(["reducer"], m.relay_lag())
        for index, worker in sorted(m.workers.items()):
            if worker.relay_lag_records is not None:
                relay.add_metric([f"http-{index}"], worker.relay_lag_records)
        yield relay

    def _http_side(self, m: Metrics) -> Iterator[Metric]:
        histograms = node_histograms(m)
        empty = Histogram()
        publish = histograms.get(PUBLISH, empty)
        yield HistogramMetricFamily(
            "flux_publish_latency_ms",
            "Milliseconds to answer a successful POST /api/events or /api/events/batch (validation, the "
            "broker's acks=all or the batch's commit, and the fold with ?wait=true).",
            buckets=_buckets(publish),
            sum_value=publish.sum,
        )
        relayed = histograms.get(RELAYED, empty)
        yield HistogramMetricFamily(
            "flux_relay_latency_ms",
            "Milliseconds from the newest event's Kafka record timestamp of a change record (set when the "
            "publisher sent it) to the change being handed to the WebSocket subscribers, per change record.",
            buckets=_buckets(relayed),
            sum_value=relayed.sum,
        )
        requests = HistogramMetricFamily(
            "flux_http_request_duration_ms",
            "Milliseconds to answer an HTTP request, by the matched route's template, method and status.",
            labels=["route", "method", "status"],
        )
        for key, histogram in sorted(histograms.items()):
            if key[0] == REQUEST and len(key) == 4:
                requests.add_metric(list(key[1:]), _buckets(histogram), histogram.sum)
        yield requests

    def _http_processes(self, m: Metrics) -> Iterator[Metric]:
        rss = GaugeMetricFamily(
            "flux_http_process_resident_memory_bytes",
            "Resident memory of each of the node's HTTP processes, as of its last sync (200 ms).",
            labels=["process"],
        )
        cpu = CounterMetricFamily(
            "flux_http_process_cpu_seconds_total",
            "User and system CPU time of each of the node's HTTP processes, as of its last sync (200 ms).",
            labels=["process"],
        )
        for index, worker in sorted(m.workers.items()):
            rss.add_metric([f"http-{index}"], worker.rss_bytes)
            cpu.add_metric([f"http-{index}"], worker.cpu_seconds)
        yield rss
        yield cpu


_RUNTIME = CollectorRegistry(auto_describe=False)  # this process's: made once, read at each scrape
ProcessCollector(registry=_RUNTIME)
GCCollector(registry=_RUNTIME)
PlatformCollector(registry=_RUNTIME)


def registry(metrics: Metrics, entities: int, runtime: bool = True) -> CollectorRegistry:
    """A registry of Flux's collector, with this process's process, GC and platform metrics (``runtime``)."""
    found = CollectorRegistry(auto_describe=False)
    found.register(FluxCollector(metrics, entities))
    if runtime:
        found.register(_RUNTIME)
    return found


def exposition(metrics: Metrics, entities: int, accept: str | None) -> tuple[bytes, str]:
    """The body and content type answering a scrape whose ``Accept`` header is ``accept``: OpenMetrics
    when it asks for ``application/openmetrics-text``, else the Prometheus text format 0.0.4."""
    encode, content_type = choose_encoder(accept or "")
    return encode(registry(metrics, entities)), content_type


def prometheus_text(metrics: Metrics, entities: int) -> str:
    """Flux's own metrics in the Prometheus text format (no process metrics): for tests and tools."""
    encode, _ = choose_encoder("")
    return encode(registry(metrics, entities, runtime=False)).decode()
