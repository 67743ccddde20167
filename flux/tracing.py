"""OpenTelemetry tracing, an option (``FLUX_OTEL_ENABLED``): a span per publish, a span per fold linked to them.

Off (the default), nothing here runs: :func:`tracing_for` answers ``None`` and the publisher and
the reducer keep it as one attribute they test once per call (``if self._tracing is not None``);
the OpenTelemetry SDK is not even imported.

On, :func:`tracing_for` sets up the SDK once per process from the standard ``OTEL_*`` variables
(``OTEL_SERVICE_NAME``, default ``flux``; ``OTEL_TRACES_EXPORTER``: ``otlp``, the default, over
HTTP/protobuf to ``OTEL_EXPORTER_OTLP_ENDPOINT``, ``console``, or ``none``; ``OTEL_TRACES_SAMPLER``;
``OTEL_BSP_*``) and gives a :class:`Tracing`, which makes:

* ``flux.publish`` (:meth:`Tracing.publishing`), around each call of the publisher (a single
  event, from the route or the fast path, or a batch): the event ids (at most
  :data:`MAX_EVENT_IDS`), their count, stream, and where the broker put them (partition, offset).
  Its W3C ``traceparent`` travels with the events on the record's :data:`HEADER` header. Single
  events are coalesced, so one record may carry several publishes: the header holds their
  traceparents, comma-separated, at most :data:`MAX_TRACEPARENTS` (:meth:`Tracing.headers`).
* ``flux.fold`` (:meth:`Tracing.folding`), one per partition of each batch the reducer applies,
  with a span link to every publish whose records it folded (at most :data:`MAX_LINKS`). A record
  from another producer carries no :data:`HEADER`; a W3C ``traceparent`` header, if it has one, is
  linked as well, and a record with neither adds no link.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from flux.config import Settings
from flux.model.events import Envelope

if TYPE_CHECKING:
    from opentelemetry.trace import Link, Span, Tracer

HEADER = "flux-trace"
"""The record header listing the traceparents of the publishes whose events the record holds."""
TRACEPARENT = "traceparent"
MAX_EVENT_IDS = 32  # event ids named on a publish span (the count says how many there were)
MAX_STREAMS = 16
MAX_TRACEPARENTS = 32  # publishes named on one record's header (coalesced single events)
MAX_LINKS = 128  # publishes linked from one fold span
DEFAULT_SERVICE_NAME = "flux"

_lock = threading.Lock()
_process_tracing: Tracing | None = None


def tracing_for(settings: Settings) -> Tracing | None:
    """The process's :class:`Tracing` (the SDK set up on first call) if ``FLUX_OTEL_ENABLED``, else ``None``."""
    if not settings.otel_enabled:
        return None
    global _process_tracing
    with _lock:
        if _process_tracing is None:
            _process_tracing = Tracing(_sdk_provider().get_tracer("flux"))
        return _process_tracing


def _sdk_provider() -> Any:
    """A tracer provider configured from the ``OTEL_*`` environment, made the global one."""
    from opentelemetry import trace
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

    service = os.environ.get("OTEL_SERVICE_NAME") or DEFAULT_SERVICE_NAME
    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: service}))
    names = [name.strip() for name in os.environ.get("OTEL_TRACES_EXPORTER", "otlp").split(",") if name.strip()]
    for name in names:
        if name == "none":
            continue
        if name == "console":
            exporter: Any = ConsoleSpanExporter()
        elif name == "otlp":
            try:
                from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
            except ImportError as exc:
                raise RuntimeError(
                    "FLUX_OTEL_ENABLED with the OTLP exporter needs `pip install flux-state[otel]`"
                ) from exc
            exporter = OTLPSpanExporter()
        else:
            raise ValueError(f"OTEL_TRACES_EXPORTER: Flux knows otlp, console and none, not {name!r}")
        provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    return provider


def traceparent(span: Span) -> str:
    """The W3C ``traceparent`` of ``span``."""
    context = span.get_span_context()
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"


def _link(value: str) -> Link | None:
    """A span link to the span a W3C ``traceparent`` names, or ``None`` if it is not one."""
    from opentelemetry.trace import Link, SpanContext, TraceFlags

    parts = value.strip().split("-")
    if len(parts) != 4 or len(parts[1]) != 32 or len(parts[2]) != 16 or len(parts[3]) != 2:
        return None
    try:
        trace_id, span_id, flags = int(parts[1], 16), int(parts[2], 16), int(parts[3], 16)
    except ValueError:
        return None
    if not trace_id or not span_id:
        return None
    return Link(SpanContext(trace_id, span_id, is_remote=True, trace_flags=TraceFlags(flags)))


def traceparents_of(headers: Any) -> list[str]:
    """The traceparents a record's headers (Kafka's ``(name, bytes)`` pairs, or a mapping) carry."""
    if not headers:
        return []
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    found: list[str] = []
    for name, value in pairs:
        if name in (HEADER, TRACEPARENT) and value:
            text = value.decode("latin-1") if isinstance(value, bytes | bytearray) else str(value)
            found.extend(part for part in text.split(",") if part)
    return found


class PublishSpan:
    """A ``flux.publish`` span while its events are on their way: its traceparent, and where they landed."""

    __slots__ = ("span", "traceparent")

    def __init__(self, span: Span) -> None:
        self.span = span
        self.traceparent = traceparent(span)

    def landed(self, offsets: dict[int, int]) -> dict[int, int]:
        """Record the partitions and offsets the broker acknowledged (returns ``offsets``)."""
        partitions = sorted(offsets)
        self.span.set_attribute("flux.partitions", partitions)
        self.span.set_attribute("flux.offsets", [offsets[partition] for partition in partitions])
        if len(partitions) == 1:
            self.span.set_attribute("messaging.destination.partition.id", str(partitions[0]))
            self.span.set_attribute("messaging.kafka.offset", offsets[partitions[0]])
        return offsets


class Tracing:
    """Flux's spans on ``tracer`` (see the module docstring)."""

    def __init__(self, tracer: Tracer) -> None:
        self._tracer = tracer

    @contextmanager
    def publishing(self, envelopes: Sequence[Envelope], topic: str) -> Iterator[PublishSpan]:
        """A ``flux.publish`` span, current while the events are published (an exception is recorded on it)."""
        from opentelemetry.trace import SpanKind

        streams = sorted({envelope["stream"] for envelope in envelopes})
        attributes: dict[str, Any] = {
            "messaging.system": "kafka",
            "messaging.operation.type": "send",
            "messaging.destination.name": topic,
            "flux.event_ids": [envelope["eventId"] for envelope in envelopes[:MAX_EVENT_IDS]],
            "flux.event_count": len(envelopes),
            "flux.stream": streams[0] if len(streams) == 1 else streams[:MAX_STREAMS],
        }
        with self._tracer.start_as_current_span("flux.publish", kind=SpanKind.PRODUCER, attributes=attributes) as span:
            yield PublishSpan(span)

    @staticmethod
    def headers(traceparents: Iterable[str | None]) -> list[tuple[str, bytes]] | None:
        """The record headers naming ``traceparents`` (distinct, at most :data:`MAX_TRACEPARENTS`), or ``None``."""
        distinct = list(dict.fromkeys(value for value in traceparents if value))[:MAX_TRACEPARENTS]
        return [(HEADER, ",".join(distinct).encode())] if distinct else None

    @contextmanager
    def folding(self, records: Sequence[Any]) -> Iterator[None]:
        """``flux.fold`` spans, one per partition of ``records`` (Faust events), linked to the publishes
        their headers name, while the batch is applied (an exception is recorded on each)."""
        from opentelemetry.trace import SpanKind, Status, StatusCode

        by_partition: dict[int, list[Any]] = {}
        for record in records:
            by_partition.setdefault(record.message.partition, []).append(record.message)
        spans: list[Span] = []
        for partition, messages in by_partition.items():
            links: dict[str, Link] = {}
            for message in messages:
                for value in traceparents_of(getattr(message, "headers", None)):
                    if len(links) >= MAX_LINKS:
                        break
                    if value not in links and (link := _link(value)) is not None:
                        links[value] = link
            attributes = {
                "messaging.system": "kafka",
                "messaging.operation.type": "process",
                "messaging.destination.name": messages[0].topic,
                "messaging.destination.partition.id": str(partition),
                "flux.partition": partition,
                "flux.records": len(messages),
                "flux.first_offset": messages[0].offset,
                "flux.last_offset": messages[-1].offset,
            }
            spans.append(
                self._tracer.start_span(
                    "flux.fold", kind=SpanKind.CONSUMER, attributes=attributes, links=list(links.values())
                )
            )
        try:
            yield
        except BaseException as exc:
            for span in spans:
                span.record_exception(exc)
                span.set_status(Status(StatusCode.ERROR, repr(exc)))
            raise
        finally:
            for span in spans:
                span.end()
