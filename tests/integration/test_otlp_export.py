"""Spans reach the OTLP receiver the standard variables name, over OTLP/HTTP and OTLP/gRPC (receivers on 127.0.0.1)."""
import pytest
from opentelemetry.trace import SpanKind

from infra.adapters import telemetry
from tests.otlp_receiver import GrpcReceiver, HttpReceiver, standard_variables

OTEL = ("OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_TRACES_SAMPLER",
        "OTEL_SERVICE_NAME", "OTEL_RESOURCE_ATTRIBUTES")


@pytest.mark.parametrize("protocol, receiver", [("http/protobuf", HttpReceiver), ("grpc", GrpcReceiver)])
def test_spans_go_where_otel_exporter_otlp_endpoint_and_protocol_say(monkeypatch, protocol, receiver):
    with standard_variables(monkeypatch, receiver, protocol, "runledger-export-test", OTEL) as otlp:
        # Given only the standard variables: an endpoint, a protocol and a service name
        assert telemetry.exporter_names() == ["otlp"]
        provider = telemetry.tracer_provider("runledger", [telemetry.otlp_exporter()])
        tracer = provider.get_tracer("test")
        # When a producer span and its child end, and the provider flushes
        with tracer.start_as_current_span("send ledger.commands", kind=SpanKind.PRODUCER) as parent:
            with tracer.start_as_current_span("child"):
                pass
        assert provider.force_flush(10_000)
        provider.shutdown()
    # Then the receiver holds both, with the service name, kinds and parentage
    spans = {s.name: s for s in otlp.snapshot()}
    assert set(spans) == {"send ledger.commands", "child"}
    assert {s.service for s in spans.values()} == {"runledger-export-test"}
    assert (spans["send ledger.commands"].kind, spans["child"].parent_id) == \
        ("PRODUCER", format(parent.get_span_context().span_id, "016x"))
