"""OpenTelemetry wiring: one tracer provider per process; W3C trace context travels in envelopes.

The API opens a span per command and writes its `traceparent` into the command envelope; the
processor copies it into every event it appends and into the record headers, so a trace runs
from the HTTP request through Kafka to whatever reads the events later.
"""
from opentelemetry import metrics, trace
from opentelemetry.propagate import extract, inject
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import ConsoleMetricExporter, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter


def setup_tracing(service_name: str, console: bool = False) -> None:
    """Install the process's tracer provider (once)."""
    if isinstance(trace.get_tracer_provider(), TracerProvider):
        return
    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    if console:
        provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
    trace.set_tracer_provider(provider)


def setup_metrics(service_name: str, console: bool = False) -> metrics.Meter:
    """Install the process's meter provider (once) and return runledger's meter."""
    if not isinstance(metrics.get_meter_provider(), MeterProvider):
        readers = [PeriodicExportingMetricReader(ConsoleMetricExporter(), 30000)] if console else []
        metrics.set_meter_provider(MeterProvider(
            metric_readers=readers, resource=Resource.create({"service.name": service_name})))
    return metrics.get_meter("runledger")


def tracer() -> trace.Tracer:
    return trace.get_tracer("runledger")


def context_from(headers) -> object:
    return extract(headers)


def current_traceparent() -> str | None:
    carrier: dict[str, str] = {}
    inject(carrier)
    return carrier.get("traceparent")
