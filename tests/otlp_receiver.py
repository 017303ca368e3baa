"""OTLP trace and metric receivers for tests, on 127.0.0.1 only: OTLP/HTTP (protobuf) and OTLP/gRPC, decoding with
opentelemetry-proto.

What the services export is kept as `Span`s (name, kind, ids, parent, links, attributes, status,
service name), so a test can assert on the trace structure a real collector would receive, and
as metric `Point`s (service, name, unit, attributes, value; a histogram's value is (count, sum)).
"""
import gzip
from contextlib import contextmanager
import threading
from concurrent import futures
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span as ProtoSpan

KINDS = {ProtoSpan.SPAN_KIND_INTERNAL: "INTERNAL", ProtoSpan.SPAN_KIND_SERVER: "SERVER",
         ProtoSpan.SPAN_KIND_CLIENT: "CLIENT", ProtoSpan.SPAN_KIND_PRODUCER: "PRODUCER",
         ProtoSpan.SPAN_KIND_CONSUMER: "CONSUMER"}
STATUS = {0: "UNSET", 1: "OK", 2: "ERROR"}


def value(v: AnyValue) -> Any:
    field = v.WhichOneof("value")
    return getattr(v, field) if field in ("string_value", "bool_value", "int_value", "double_value") else str(v)


def attributes(pairs) -> dict[str, Any]:
    return {kv.key: value(kv.value) for kv in pairs}


@dataclass(frozen=True)
class Link:
    trace_id: str
    span_id: str
    attributes: dict


@dataclass(frozen=True)
class Span:
    service: str
    name: str
    kind: str
    trace_id: str
    span_id: str
    parent_id: str | None
    links: tuple[Link, ...]
    attributes: dict
    status: str
    events: tuple[str, ...]


@dataclass(frozen=True)
class Point:
    service: str
    name: str
    unit: str
    attributes: dict
    value: Any  # a number; (count, sum) for a histogram
    time_unix_nano: int


def number(point) -> Any:
    return point.as_int if point.WhichOneof("value") == "as_int" else point.as_double


def points_of(metric) -> list[tuple[dict, Any, int]]:
    kind = metric.WhichOneof("data")
    if kind in ("sum", "gauge"):
        return [(attributes(p.attributes), number(p), p.time_unix_nano) for p in getattr(metric, kind).data_points]
    if kind == "histogram":
        return [(attributes(p.attributes), (p.count, p.sum), p.time_unix_nano) for p in metric.histogram.data_points]
    return []


class Received:
    """Every span and metric point the receiver was sent, in arrival order (thread-safe)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.spans: list[Span] = []
        self.points: list[Point] = []
        self.requests = 0
        self.metric_requests = 0

    def take_metrics(self, request: metrics_service_pb2.ExportMetricsServiceRequest) -> None:
        points = [Point(attributes(rm.resource.attributes).get("service.name", ""), m.name, m.unit, found, value, at)
                  for rm in request.resource_metrics for sm in rm.scope_metrics for m in sm.metrics
                  for found, value, at in points_of(m)]
        with self.lock:
            self.points += points
            self.metric_requests += 1

    def metrics_snapshot(self) -> list[Point]:
        with self.lock:
            return list(self.points)

    def take(self, request: trace_service_pb2.ExportTraceServiceRequest) -> None:
        spans = [Span(service=attributes(rs.resource.attributes).get("service.name", ""), name=s.name,
                      kind=KINDS.get(s.kind, str(s.kind)), trace_id=s.trace_id.hex(), span_id=s.span_id.hex(),
                      parent_id=s.parent_span_id.hex() or None,
                      links=tuple(Link(l.trace_id.hex(), l.span_id.hex(), attributes(l.attributes)) for l in s.links),
                      attributes=attributes(s.attributes), status=STATUS.get(s.status.code, str(s.status.code)),
                      events=tuple(e.name for e in s.events))
                 for rs in request.resource_spans for ss in rs.scope_spans for s in ss.spans]
        with self.lock:
            self.spans += spans
            self.requests += 1

    def snapshot(self) -> list[Span]:
        with self.lock:
            return list(self.spans)


class HttpReceiver(Received):
    """An OTLP/HTTP endpoint (`POST /v1/traces` and `/v1/metrics`, binary protobuf, gzip or not) on 127.0.0.1."""

    def __enter__(self) -> "HttpReceiver":
        received = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                if self.path == "/v1/metrics":
                    request = metrics_service_pb2.ExportMetricsServiceRequest()
                    request.ParseFromString(body)
                    received.take_metrics(request)
                    self.answer(metrics_service_pb2.ExportMetricsServiceResponse().SerializeToString())
                    return
                if self.path != "/v1/traces":
                    self.send_error(404)
                    return
                request = trace_service_pb2.ExportTraceServiceRequest()
                request.ParseFromString(body)
                received.take(request)
                self.answer(trace_service_pb2.ExportTraceServiceResponse().SerializeToString())

            def answer(self, reply: bytes) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args):
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, name="otlp-http", daemon=True)
        self.thread.start()
        return self

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


class GrpcReceiver(Received):
    """An OTLP/gRPC TraceService and MetricsService (plaintext) on 127.0.0.1."""

    def __enter__(self) -> "GrpcReceiver":
        received = self

        class Service(trace_service_pb2_grpc.TraceServiceServicer):
            def Export(self, request, context):
                received.take(request)
                return trace_service_pb2.ExportTraceServiceResponse()

        class Metrics(metrics_service_pb2_grpc.MetricsServiceServicer):
            def Export(self, request, context):
                received.take_metrics(request)
                return metrics_service_pb2.ExportMetricsServiceResponse()

        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Service(), self.server)
        metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(Metrics(), self.server)
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()
        return self

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __exit__(self, *exc) -> None:
        self.server.stop(grace=None)


@contextmanager
def standard_variables(monkeypatch, receiver: type, protocol: str, service: str, clear: tuple[str, ...]):
    """A receiver of the kind given, and only the standard variables naming it: its endpoint, the protocol and the
    service name (every name in `clear` unset first, so nothing the shell exported leaks in)."""
    for name in clear:
        monkeypatch.delenv(name, raising=False)
    with receiver() as otlp:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", otlp.endpoint)
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", protocol)
        monkeypatch.setenv("OTEL_SERVICE_NAME", service)
        yield otlp
