"""Metrics reach the OTLP receiver the standard variables name, over OTLP/HTTP and OTLP/gRPC (receivers on 127.0.0.1),
beside the Prometheus page, which holds the same values."""
import pytest
from opentelemetry.sdk.metrics import MeterProvider

from infra.adapters import telemetry
from infra.adapters.meters import ProcessorMeters
from infra.adapters.prometheus import Exposition
from tests.metrics_page import samples, value
from tests.otlp_receiver import GrpcReceiver, HttpReceiver, standard_variables

OTEL = ("OTEL_METRICS_EXPORTER", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
        "OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", "OTEL_SERVICE_NAME",
        "OTEL_RESOURCE_ATTRIBUTES", "OTEL_METRIC_EXPORT_INTERVAL")


@pytest.mark.parametrize("protocol, receiver", [("http/protobuf", HttpReceiver), ("grpc", GrpcReceiver)])
def test_metrics_go_where_otel_exporter_otlp_endpoint_and_protocol_say(monkeypatch, protocol, receiver):
    with standard_variables(monkeypatch, receiver, protocol, "runledger-metrics-test", OTEL) as otlp:
        # Given only the standard variables, and the Prometheus page beside them
        assert telemetry.metric_exporter_names() == ["otlp"]
        exposition = Exposition()
        provider = MeterProvider(metric_readers=[exposition.reader, *telemetry.metric_readers()],
                                 resource=telemetry.resource("runledger"))
        meters = ProcessorMeters(provider.get_meter("runledger"), "ledger.commands", "ledger.processor")
        # When a transaction commits a rejection and the provider flushes
        tally = meters.tally(records=1, commands=1)
        tally.decided({"body": {"type": "StartRun"}}, {"status": "rejected", "code": "not_found"})
        meters.committed(tally)
        assert provider.force_flush(10_000)
        page = samples(exposition.render()[0].decode())
        provider.shutdown()
    # Then the receiver holds it, with the service name, exactly as the page does (each export, the flush and
    # the shutdown's, says the same cumulative count)
    def exported(name: str) -> set:
        return {(p.service, p.unit, tuple(sorted(p.attributes.items())), p.value)
                for p in otlp.metrics_snapshot() if p.name == name}
    assert exported("runledger.processor.rejections") == {
        ("runledger-metrics-test", "{command}", (("code", "not_found"), ("command_type", "StartRun")), 1)}
    assert value(page, "runledger_processor_rejections_total", command_type="StartRun", code="not_found") == 1.0
    assert exported("runledger.processor.batch.size") == {
        ("runledger-metrics-test", "{command}", (("trigger", "consumed"),), (1, 1.0))}
