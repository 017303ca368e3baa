"""OpenTelemetry wiring: one tracer provider per process, exporting where the standard `OTEL_*` variables say.

What runledger's spans are and how they connect lives in infra/adapters/tracing.py. This module
decides where they go:

- `OTEL_TRACES_EXPORTER` (`otlp`, `console`, `none`, comma-separated) names the exporters; unset,
  it is `otlp` when an OTLP endpoint (`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` or
  `OTEL_EXPORTER_OTLP_ENDPOINT`) is set and nothing otherwise, so a process nobody pointed at a
  collector sends nothing anywhere. `RUNLEDGER_OTEL_CONSOLE` adds the console exporter.
- `OTEL_EXPORTER_OTLP_TRACES_PROTOCOL` / `OTEL_EXPORTER_OTLP_PROTOCOL`: `http/protobuf` (the
  default) or `grpc`. The exporters read their endpoint, headers, timeout, compression and
  certificates from the standard variables themselves; `OTEL_BSP_*` tune the batch processor,
  `OTEL_SERVICE_NAME` / `OTEL_RESOURCE_ATTRIBUTES` the resource, `OTEL_SDK_DISABLED=true` installs nothing.
- Sampling: `OTEL_TRACES_SAMPLER` / `_ARG` when set. Without an exporter the default becomes
  `parentbased_always_off`: spans still get ids (the `traceparent` a caller or a command carries keeps
  its trace going), a caller's sampled trace is honoured, and everything else is a non-recording
  span, which costs next to nothing. Either way `FollowLinks` samples a batch's `process` span when
  one of the messages it links to was sampled, so a sampled command's trace stays whole.
- Metrics the same way: `OTEL_METRICS_EXPORTER` (`otlp`, `console`, `prometheus`, `none`), unset
  `otlp` when an endpoint (`OTEL_EXPORTER_OTLP_METRICS_ENDPOINT` or the shared one) is set;
  `OTEL_EXPORTER_OTLP_METRICS_PROTOCOL` / `_PROTOCOL`; `OTEL_METRIC_EXPORT_INTERVAL` / `_TIMEOUT`
  for the periodic reader. The Prometheus page (infra/adapters/prometheus.py) is always there, as a
  reader the caller hands in: `prometheus` in the list only says so.
"""
import logging
import os
from contextlib import contextmanager
from typing import Iterator

from opentelemetry import context, metrics, trace
from opentelemetry.propagate import extract, inject
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (ConsoleMetricExporter, MetricExporter, MetricReader,
                                              PeriodicExportingMetricReader)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.sdk.trace.sampling import (DEFAULT_OFF, Decision, Sampler, SamplingResult,
                                              _get_from_env_or_default)

log = logging.getLogger("runledger.telemetry")
PROTOCOLS = ("http/protobuf", "grpc")


class TelemetryMisconfigured(ValueError):
    """An `OTEL_*` variable names an exporter or protocol runledger does not ship."""


class FollowLinks(Sampler):
    """Sample a root span that links to a sampled context; leave every other decision to `fallback`."""

    def __init__(self, fallback: Sampler):
        self.fallback = fallback

    def should_sample(self, parent_context, trace_id, name, kind=None, attributes=None, links=None,
                      trace_state=None) -> SamplingResult:
        if links and any(link.context.trace_flags.sampled for link in links) and \
                not trace.get_current_span(parent_context).get_span_context().is_valid:
            return SamplingResult(Decision.RECORD_AND_SAMPLE, attributes)
        return self.fallback.should_sample(parent_context, trace_id, name, kind, attributes, links, trace_state)

    def get_description(self) -> str:
        return f"FollowLinks{{{self.fallback.get_description()}}}"


def env(name: str) -> str:
    return os.environ.get(name, "").strip()


def exporter_names(console: bool = False, signal: str = "traces") -> list[str]:
    """The exporters the environment asks for a signal (`otlp`, `console`), in order, without repeats."""
    named = [n.strip().lower() for n in env(f"OTEL_{signal.upper()}_EXPORTER").split(",") if n.strip()]
    if not named and (env(f"OTEL_EXPORTER_OTLP_{signal.upper()}_ENDPOINT") or env("OTEL_EXPORTER_OTLP_ENDPOINT")):
        named = ["otlp"]
    always = {"metrics": ("prometheus",)}.get(signal, ())  # served anyway: naming it changes nothing
    named = [n for n in named if n != "none" and n not in always] + (["console"] if console else [])
    unknown = sorted(set(named) - {"otlp", "console"})
    if unknown:
        raise TelemetryMisconfigured(f"OTEL_{signal.upper()}_EXPORTER names {', '.join(unknown)}: runledger "
                                     f"exports {signal} with otlp or console{' or prometheus' if always else ''} "
                                     "(or none)")
    return list(dict.fromkeys(named))


def metric_exporter_names(console: bool = False) -> list[str]:
    """The metric exporters the environment asks for, besides the Prometheus page (always served)."""
    return exporter_names(console, "metrics")


def otlp_protocol(signal: str = "traces") -> str:
    protocol = (env(f"OTEL_EXPORTER_OTLP_{signal.upper()}_PROTOCOL") or env("OTEL_EXPORTER_OTLP_PROTOCOL")
                or "http/protobuf").lower()
    if protocol not in PROTOCOLS:
        raise TelemetryMisconfigured(f"OTLP protocol {protocol!r} is not supported for {signal}: use "
                                     f"{' or '.join(PROTOCOLS)}")
    return protocol


def otlp_exporter() -> SpanExporter:
    """The OTLP span exporter for the configured protocol (imported only when asked for: gRPC is heavy)."""
    if otlp_protocol() == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    return OTLPSpanExporter()


def resource(service_name: str) -> Resource:
    """The resource from OTEL_SERVICE_NAME / OTEL_RESOURCE_ATTRIBUTES, named `service_name` if they name none."""
    found = Resource.create()
    if str(found.attributes.get("service.name", "")).startswith("unknown_service"):
        found = found.merge(Resource({"service.name": service_name}))
    return found


def sampler(exporting: bool) -> Sampler:
    # The SDK's own reading of OTEL_TRACES_SAMPLER / _ARG (what TracerProvider does when given none).
    configured = _get_from_env_or_default() if exporting or env("OTEL_TRACES_SAMPLER") else DEFAULT_OFF
    return FollowLinks(configured)


def tracer_provider(service_name: str, exporters: list[SpanExporter]) -> TracerProvider:
    """A provider exporting to `exporters` in batches, sampling as the environment (or its absence) says."""
    provider = TracerProvider(resource=resource(service_name), sampler=sampler(bool(exporters)))
    for exporter in exporters:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


def setup_tracing(service_name: str, console: bool = False) -> None:
    """Install the process's tracer provider (once), exporting where the OTEL_* variables say."""
    if isinstance(trace.get_tracer_provider(), TracerProvider) or env("OTEL_SDK_DISABLED").lower() == "true":
        return
    names = exporter_names(console)
    exporters = [otlp_exporter() if name == "otlp" else ConsoleSpanExporter() for name in names]
    trace.set_tracer_provider(tracer_provider(service_name, exporters))
    if names:
        log.info("exporting traces to %s", ", ".join(f"otlp ({otlp_protocol()})" if n == "otlp" else n for n in names))


def otlp_metric_exporter() -> MetricExporter:
    """The OTLP metric exporter for the configured protocol; it reads its endpoint, temporality and the rest itself."""
    if otlp_protocol("metrics") == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
    else:
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    return OTLPMetricExporter()


def metric_readers(console: bool = False) -> list[MetricReader]:
    """Periodic readers for the exporters the environment names (OTEL_METRIC_EXPORT_INTERVAL sets the period)."""
    return [PeriodicExportingMetricReader(otlp_metric_exporter() if name == "otlp" else ConsoleMetricExporter())
            for name in metric_exporter_names(console)]


def setup_metrics(service_name: str, console: bool = False, readers: tuple[MetricReader, ...] = ()) -> metrics.Meter:
    """Install the process's meter provider (once), reading into `readers` and exporting where the
    OTEL_* variables say, and return runledger's meter."""
    if not isinstance(metrics.get_meter_provider(), MeterProvider) and env("OTEL_SDK_DISABLED").lower() != "true":
        exporting = metric_readers(console)
        metrics.set_meter_provider(MeterProvider(metric_readers=[*readers, *exporting],
                                                 resource=resource(service_name)))
        if exporting:
            log.info("exporting metrics to %s", ", ".join(
                f"otlp ({otlp_protocol('metrics')})" if n == "otlp" else n for n in metric_exporter_names(console)))
    return metrics.get_meter("runledger")


def tracer() -> trace.Tracer:
    return trace.get_tracer("runledger")


@contextmanager
def continued(headers) -> Iterator[None]:
    """Continue the caller's trace (its `traceparent` header) where no span is current.

    FastAPI's own request span normally is current, and already continues it."""
    if trace.get_current_span().get_span_context().is_valid:
        yield
        return
    token = context.attach(extract(headers))
    try:
        yield
    finally:
        context.detach(token)


def current_traceparent() -> str | None:
    carrier: dict[str, str] = {}
    inject(carrier)
    return carrier.get("traceparent")
