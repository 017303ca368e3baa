"""Lag status rules and the OpenTelemetry gauges that publish them."""
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from queries.metrics import LagMetrics
from queries.lag import PartitionLag, status_of


@pytest.mark.parametrize("failed,events,seconds,idle,status", [
    (True, 0, 0, 1, "FAILED"), (False, 0, 0, 999, "OK"), (False, 5, 1, 2, "OK"),
    (False, 5, 9, 2, "LAGGING"), (False, 5, 0, None, "LAGGING"), (False, 5, 90, 45, "STALLED"),
])
def test_status_rules(failed, events, seconds, idle, status):
    assert status_of(failed, events, seconds, idle, stall_after_s=30, lagging_after_s=5) == status


def test_gauges_publish_the_latest_report():
    reader = InMemoryMetricReader()
    lag = LagMetrics()
    lag.register(MeterProvider(metric_readers=[reader]).get_meter("test"))
    lag.report = [PartitionLag("runs", 0, 10, 14, 4, 2.5, "OK", 2), PartitionLag("audit", 1, 3, 3, 0, 0.0, "OK")]
    points = {(m.name, p.attributes["projector"], p.attributes["partition"]): p.value
              for rm in reader.get_metrics_data().resource_metrics for sm in rm.scope_metrics
              for m in sm.metrics for p in m.data.data_points}
    assert points == {("runledger.projector.lag.events", "runs", 0): 4,
                      ("runledger.projector.lag.events", "audit", 1): 0,
                      ("runledger.projector.lag.seconds", "runs", 0): 2.5,
                      ("runledger.projector.lag.seconds", "audit", 1): 0.0,
                      ("runledger.projector.held.tenants", "runs", 0): 2,
                      ("runledger.projector.held.tenants", "audit", 1): 0}


def test_notify_payloads_are_split_under_the_server_limit():
    import json
    from projectors.channels import NOTIFY_LIMIT, notifications
    heads = [["tenant-x", f"run:{i:036d}", i] for i in range(500)]
    notes = notifications("schema_g1", heads)
    assert len(notes) > 1 and all(len(n.encode()) <= NOTIFY_LIMIT for n in notes)
    assert [h for n in notes for h in json.loads(n)["channels"]] == heads
