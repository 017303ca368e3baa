"""The Prometheus text exposition of the process's OpenTelemetry metrics, for `/metrics` and a loopback port.

The SDK's own `PrometheusMetricReader` (opentelemetry-exporter-prometheus, the contrib release of
the pinned SDK) translates the metrics on each scrape; prometheus_client renders them. Why the
pieces are arranged so:

- One registry of our own, never prometheus_client's global one: nothing else in the process
  (a library registering its own collectors) ends up on the page, and tests can build as many
  expositions as they like.
- A scrape collects under a lock. The reader hands each collection to its collector through a
  queue that the next render empties; two scrapes at once (the API's route and the loopback
  listener, or two Prometheus servers) could otherwise take each other's data and one would
  render an empty page.
- No `otel_scope_*` labels: every instrument of ours is on the `runledger` meter, and FastAPI's
  HTTP metrics are told apart by name, so the labels on a series are exactly its attributes.
- Collecting runs the observable gauges' callbacks, which only read values a background task
  refreshed (queries/metrics.py): a scrape never waits on a database.
"""
import logging
import threading
from functools import lru_cache
from typing import Iterable

from opentelemetry.exporter.prometheus import PrometheusMetricReader
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder, start_http_server

log = logging.getLogger("runledger.metrics")


class LockedRegistry(CollectorRegistry):
    """A registry whose collections never interleave (see the module's docstring)."""

    def __init__(self) -> None:
        super().__init__(auto_describe=False)
        self.lock = threading.Lock()

    def collect(self) -> Iterable:
        with self.lock:
            return list(super().collect())


class Exposition:
    """A metric reader for the meter provider, and the page Prometheus scrapes from it."""

    def __init__(self) -> None:
        self.registry = LockedRegistry()
        self.reader = PrometheusMetricReader(scope_info_enabled=False, registry=self.registry)
        self.listener = None

    def render(self, accept: str = "") -> tuple[bytes, str]:
        """The page and its content type: the text format, or OpenMetrics when `accept` asks for it."""
        encode, content_type = choose_encoder(accept or "")
        return encode(self.registry), content_type

    def listen(self, host: str, port: int) -> None:
        """Serve the page on host:port too, with no authentication (meant for a loopback address)."""
        self.listener, _ = start_http_server(port, host, self.registry)
        log.info("serving metrics on http://%s:%s/metrics", host, self.listener.server_address[1])

    def close(self) -> None:
        if self.listener is not None:
            self.listener.shutdown()
            self.listener.server_close()
            self.listener = None


@lru_cache(maxsize=1)
def process_exposition() -> Exposition:
    """The process's one exposition: its reader joins the meter provider, which is installed once per process."""
    return Exposition()
