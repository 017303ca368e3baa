"""The Prometheus page: names, units, labels and values as the OpenTelemetry SDK's instruments recorded them,
and `/metrics` only for an admin of the operations tenant."""
import pytest
from fastapi.testclient import TestClient
from opentelemetry.metrics import Observation
from opentelemetry.sdk.metrics import MeterProvider

from infra.adapters import telemetry
from infra.adapters.http.app import create_app
from infra.adapters.meters import CommandMeters, ProcessorMeters, StreamMeters
from infra.adapters.prometheus import Exposition
from queries.api import routes_metrics
from tests.metrics_page import samples, series, value
from tests.support import make_settings, token


def exposed() -> tuple[Exposition, MeterProvider]:
    exposition = Exposition()
    return exposition, MeterProvider(metric_readers=[exposition.reader])


def test_counters_histograms_and_gauges_are_named_by_the_conventions_with_exactly_their_attributes_as_labels():
    exposition, provider = exposed()
    meter = provider.get_meter("runledger")
    processor = ProcessorMeters(meter, "p.commands", "p.processor")
    tally = processor.tally(records=3, commands=3)
    for _ in range(2):
        tally.decided({"body": {"type": "StartRun"}}, {"status": "rejected", "code": "not_found"})
    tally.decided({"body": {"type": "RequestToolCall"}},
                  {"status": "accepted", "decision": {"decision": "REQUIRE_APPROVAL", "source": "envelope"}})
    processor.committed(tally)
    streams = StreamMeters(meter)
    streams.subscribed("run:0189c0de-0000-7000-8000-000000000000", 1)
    meter.create_observable_gauge("runledger.approvals.pending", [lambda _: [
        Observation(4, {"tenant_id": "acme", "required_role": "approver"})]], unit="{approval}")

    page, content_type = exposition.render()
    found = samples(page.decode())
    assert content_type.startswith("text/plain")
    assert series(found, "runledger_processor_rejections_total") == {
        frozenset({("command_type", "StartRun"), ("code", "not_found")}): 2.0}
    assert series(found, "runledger_processor_commands_total") == {
        frozenset({("command_type", "StartRun"), ("outcome", "rejected")}): 2.0,
        frozenset({("command_type", "RequestToolCall"), ("outcome", "accepted")}): 1.0}
    assert series(found, "runledger_policy_decisions_total") == {
        frozenset({("decision", "REQUIRE_APPROVAL"), ("source", "envelope")}): 1.0}
    assert (value(found, "runledger_processor_batch_size_count", trigger="consumed"),
            value(found, "runledger_processor_batch_size_sum", trigger="consumed"),
            value(found, "runledger_processor_batch_size_bucket", trigger="consumed", le="2"),
            value(found, "runledger_processor_batch_size_bucket", trigger="consumed", le="5")) == (1.0, 3.0, 0.0, 1.0)
    assert series(found, "runledger_processor_transactions_total") == {
        frozenset({("trigger", "consumed"), ("outcome", "committed")}): 1.0}
    processing = {"messaging_system": "kafka", "messaging_operation_name": "process",
                  "messaging_destination_name": "p.commands", "messaging_consumer_group_name": "p.processor"}
    assert value(found, "messaging_process_duration_seconds_count", **processing) == 1.0
    assert series(found, "runledger_sse_subscribers") == {frozenset({("channel", "run")}): 1.0}  # never the run id
    assert series(found, "runledger_approvals_pending") == {
        frozenset({("tenant_id", "acme"), ("required_role", "approver")}): 4.0}
    assert not any(label.startswith("otel_scope") for _, labels in found for label, _ in labels)


def test_an_aborted_transaction_counts_its_reason_and_a_fencing_its_partition_and_decides_nothing():
    exposition, provider = exposed()
    processor = ProcessorMeters(provider.get_meter("runledger"), "p.commands", "p.processor")
    tally = processor.tally(records=1, commands=1)
    tally.decided({"body": {"type": "StartRun"}}, {"status": "accepted"})
    processor.aborted(tally, "fenced", 2)
    processor.aborted(processor.tally(records=0, commands=4), "log_error", 2)
    found = samples(exposition.render()[0].decode())
    assert series(found, "runledger_processor_transactions_total") == {
        frozenset({("trigger", "consumed"), ("outcome", "aborted"), ("reason", "fenced")}): 1.0,
        frozenset({("trigger", "timer"), ("outcome", "aborted"), ("reason", "log_error")}): 1.0}
    assert series(found, "runledger_processor_fenced_total") == {frozenset({("partition", "2")}): 1.0}
    assert series(found, "runledger_processor_commands_total") == {}


def test_the_command_round_trip_is_a_histogram_by_type_and_outcome_and_unknown_types_are_other():
    exposition, provider = exposed()
    commands = CommandMeters(provider.get_meter("runledger"))
    commands.answered({"body": {"type": "RequestRun"}}, {"status": "accepted"}, 0.0)
    commands.answered({"body": {"type": "RequestRun"}}, {"status": "accepted", "original_command_id": "c"}, 0.0)
    commands.answered({"body": {"type": "DropAllTables"}}, None, 0.0)
    found = samples(exposition.render()[0].decode())
    assert series(found, "runledger_command_duration_seconds_count") == {
        frozenset({("command_type", "RequestRun"), ("outcome", "accepted")}): 1.0,
        frozenset({("command_type", "RequestRun"), ("outcome", "replayed")}): 1.0,
        frozenset({("command_type", "other"), ("outcome", "pending")}): 1.0}


def test_openmetrics_is_served_to_a_scraper_that_asks_for_it():
    exposition, provider = exposed()
    provider.get_meter("runledger").create_counter("runledger.processor.fenced").add(1, {"partition": "0"})
    page, content_type = exposition.render("application/openmetrics-text; version=1.0.0")
    assert content_type.startswith("application/openmetrics-text")
    assert page.decode().rstrip().endswith("# EOF")


def app_with(exposition: Exposition) -> TestClient:
    return TestClient(create_app(make_settings(), [routes_metrics.router], {"exposition": exposition}))


def test_metrics_needs_an_admin_token_of_the_operations_tenant():
    exposition, provider = exposed()
    provider.get_meter("runledger").create_counter("runledger.processor.fenced").add(1, {"partition": "0"})
    with app_with(exposition) as http:
        anonymous = http.get("/metrics")
        customer = http.get("/metrics", headers={"Authorization": f"Bearer {token('acme', 'a', ('admin',))}"})
        ops_operator = http.get("/metrics", headers={"Authorization": f"Bearer {token('ops', 'o', ('operator',))}"})
        ops_admin = http.get("/metrics", headers={"Authorization": f"Bearer {token('ops', 'scraper', ('admin',))}"})
    assert [(r.status_code, r.json()["code"]) for r in (anonymous, customer, ops_operator)] == [
        (401, "missing_token"), (403, "ops_only"), (403, "ops_only")]
    assert (ops_admin.status_code, ops_admin.headers["content-type"].split(";")[0]) == (200, "text/plain")
    assert value(samples(ops_admin.text), "runledger_processor_fenced_total", partition="0") == 1.0


@pytest.mark.parametrize("variables, expected", [
    ({}, []),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, ["otlp"]),
    ({"OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": "http://127.0.0.1:4318/v1/metrics"}, ["otlp"]),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318", "OTEL_METRICS_EXPORTER": "none"}, []),
    ({"OTEL_METRICS_EXPORTER": "prometheus"}, []),  # the page is always served: naming it adds nothing
    ({"OTEL_METRICS_EXPORTER": "console,otlp,prometheus"}, ["console", "otlp"]),
])
def test_the_metric_exporters_are_the_ones_the_standard_variables_name(monkeypatch, variables, expected):
    for name in ("OTEL_METRICS_EXPORTER", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    for name, setting in variables.items():
        monkeypatch.setenv(name, setting)
    assert telemetry.metric_exporter_names() == expected


@pytest.mark.parametrize("protocol, module", [("grpc", "grpc"), ("http/protobuf", "http")])
def test_the_metrics_protocol_picks_the_official_exporter_and_an_unknown_one_is_refused(monkeypatch, protocol, module):
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "http://127.0.0.1:1")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", protocol)
    exporter = telemetry.otlp_metric_exporter()
    try:
        assert type(exporter).__module__ == f"opentelemetry.exporter.otlp.proto.{module}.metric_exporter"
    finally:
        exporter.shutdown()
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", "http/json")
    with pytest.raises(telemetry.TelemetryMisconfigured, match="http/json.*metrics"):
        telemetry.otlp_metric_exporter()
    monkeypatch.setenv("OTEL_METRICS_EXPORTER", "statsd")
    with pytest.raises(telemetry.TelemetryMisconfigured, match="statsd"):
        telemetry.metric_exporter_names()
