"""An OTLP/HTTP sink for benchmarks: `python -m bench.lib.otlp_sink PORT` on 127.0.0.1.

It accepts `POST /v1/traces` and `/v1/metrics` (binary protobuf, gzip or not), decodes each
request with opentelemetry-proto (the exporters' own dependency) and counts per `service.name`:
spans, spans by name, metric data points, requests and bytes. `GET /counts` answers those counts
as JSON. Decoding, not just reading the body, is what a collector does and what makes a count
proof that spans arrived. It runs as a process of its own so that its CPU shows apart from the
bench client's and the servers' in the CPU rows. Keep-alive (HTTP/1.1), as a collector answers.
"""
from __future__ import annotations

import gzip
import json
import sys
import threading
from collections import Counter, defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

COUNTS = ("spans", "points", "trace_requests", "metric_requests", "bytes")


class Tally:
    """What every service sent so far (thread-safe)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.services: dict[str, Counter] = defaultdict(Counter)
        self.names: dict[str, Counter] = defaultdict(Counter)

    def traces(self, body: bytes) -> None:
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
        request = ExportTraceServiceRequest.FromString(body)
        with self.lock:
            for rs in request.resource_spans:
                service = service_name(rs.resource)
                for ss in rs.scope_spans:
                    self.services[service]["spans"] += len(ss.spans)
                    self.names[service].update(s.name for s in ss.spans)
                self.services[service]["trace_requests"] += 1
                self.services[service]["bytes"] += len(body)

    def metrics(self, body: bytes) -> None:
        from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
        request = ExportMetricsServiceRequest.FromString(body)
        with self.lock:
            for rm in request.resource_metrics:
                service = service_name(rm.resource)
                points = sum(len(getattr(m, m.WhichOneof("data")).data_points)
                             for sm in rm.scope_metrics for m in sm.metrics if m.WhichOneof("data"))
                self.services[service]["points"] += points
                self.services[service]["metric_requests"] += 1
                self.services[service]["bytes"] += len(body)

    def snapshot(self) -> dict[str, dict[str, Any]]:
        with self.lock:
            return {s: {**{k: c[k] for k in COUNTS}, "names": dict(self.names[s])} for s, c in self.services.items()}


def service_name(resource) -> str:
    return next((kv.value.string_value for kv in resource.attributes if kv.key == "service.name"), "")


def handler(tally: Tally) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if self.headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            take = {"/v1/traces": tally.traces, "/v1/metrics": tally.metrics}.get(self.path)
            if take is None:
                self.answer(404, b"", "text/plain")
                return
            take(body)
            self.answer(200, b"", "application/x-protobuf")  # an empty Export*ServiceResponse

        def do_GET(self) -> None:
            if self.path != "/counts":
                self.answer(404, b"", "text/plain")
                return
            self.answer(200, json.dumps(tally.snapshot()).encode(), "application/json")

        def answer(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            return None
    return Handler


def main(argv: list[str]) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", int(argv[0])), handler(Tally()))
    server.daemon_threads = True
    print(f"otlp sink on http://127.0.0.1:{server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    import signal
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    main(sys.argv[1:])
