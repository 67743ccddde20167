"""A real node with FLUX_OTEL_ENABLED=true exporting over OTLP/HTTP to a receiver in the test: a single
event's and a batch's ``flux.publish`` spans reach it, and so do the ``flux.fold`` spans linked to them."""

from __future__ import annotations

import gzip
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tests.conftest import NodeFactory


class Receiver(ThreadingHTTPServer):
    """An OTLP/HTTP trace receiver: ``POST /v1/traces`` (protobuf), the spans kept with their resource."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.spans: list[tuple[dict[str, Any], Any]] = []  # (resource attributes, span)
        self.lock = threading.Lock()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def named(self, name: str) -> list[Any]:
        with self.lock:
            return [span for _, span in self.spans if span.name == name]


class _Handler(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        with self.server.lock:
            for resource_spans in request.resource_spans:
                resource = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
                for scope_spans in resource_spans.scope_spans:
                    self.server.spans.extend((resource, span) for span in scope_spans.spans)
        self.send_response(200 if self.path == "/v1/traces" else 404)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *_: Any) -> None:
        return None


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def attributes(span: Any) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for attribute in span.attributes:
        value = attribute.value
        kind = value.WhichOneof("value")
        values[attribute.key] = (
            [v.string_value or v.int_value for v in value.array_value.values]
            if kind == "array_value"
            else getattr(value, kind)
        )
    return values


def test_a_publish_span_and_the_fold_linked_to_it_reach_the_otlp_receiver(
    receiver: Receiver, new_flux: NodeFactory, uid: str
) -> None:  # the receiver first: it outlives the node, which sends its last spans as it stops
    node = new_flux(
        FLUX_OTEL_ENABLED="true",
        OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint,
        OTEL_SERVICE_NAME=f"flux-{uid}",
        OTEL_BSP_SCHEDULE_DELAY="100",
    )
    assert node.publish(f"traced-{uid}", {"n": 1}, eventId=f"single-{uid}").status_code == 200
    batch = [
        {
            "eventId": f"batch-{uid}-{n}",
            "stream": "s",
            "source": "t",
            "payload": {"entity_id": f"tb-{uid}-{n}", "properties": {"n": n}},
        }
        for n in range(3)
    ]
    assert node.client.post("/api/events/batch", json=batch).status_code == 200
    node.wait_entity(f"tb-{uid}-2", lambda entity: entity["properties"] == {"n": 2})

    def published(event_id: str) -> Any:
        return next((s for s in receiver.named("flux.publish") if event_id in attributes(s)["flux.event_ids"]), None)

    def fold_linked_to(span: Any) -> Any:
        return next(
            (
                fold
                for fold in receiver.named("flux.fold")
                if any(link.trace_id == span.trace_id and link.span_id == span.span_id for link in fold.links)
            ),
            None,
        )

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        single, whole = published(f"single-{uid}"), published(f"batch-{uid}-0")
        if single and whole and fold_linked_to(single) and fold_linked_to(whole):
            break
        time.sleep(0.2)
    else:
        names = [span.name for _, span in receiver.spans]
        raise AssertionError(f"no linked spans yet; received {names}:\n{node.log_tail()}")
    assert attributes(single)["flux.event_count"] == 1 and attributes(single)["flux.stream"]
    assert attributes(whole)["flux.event_ids"] == [f"batch-{uid}-{n}" for n in range(3)]
    fold = attributes(fold_linked_to(single))
    assert fold["flux.partition"] in attributes(single)["flux.partitions"]
    assert {resource["service.name"] for resource, _ in receiver.spans} == {f"flux-{uid}"}
