"""Metrics of a running `runledger serve`, read as Prometheus and an OTLP collector would: commands driven over
HTTP, then the exact change they made, compared between scrapes of /metrics.

The service exports metrics over OTLP/HTTP to a receiver in this process (the standard OTEL_* variables only)
and serves the same page on a loopback port without a token. Its log, JSON lines, is read at the end.
"""
import asyncio
import json
import re
import uuid

import httpx
import pytest

from domain.policy import REQUEST_SCHEMA
from infra.entry.bootstrap import CLICKHOUSE_PROJECTIONS, POSTGRES_PROJECTIONS
from tests.metrics_page import samples, series, value
from tests.otlp_receiver import HttpReceiver
from tests.sse_client import messages
from tests.support import KEK, SECRET, SIGNING_KEY, Service, free_port, make_settings, token, unique, wait_until

OPS = {"Authorization": f"Bearer {token('ops', 'prometheus', ('admin',))}"}
ROLES = ("operator", "admin", "approver")


class MeteredService(Service):
    """The service with fast gauge refreshes, a loopback metrics port and OTLP metrics (no OTEL_* inherited)."""

    def __init__(self, settings, otlp_endpoint: str):
        super().__init__(settings)
        self.metrics_port, self.otlp_endpoint = free_port(), otlp_endpoint

    def env(self) -> dict[str, str]:
        return {**{k: v for k, v in super().env().items() if not k.startswith("OTEL_")},
                "RUNLEDGER_METRICS_REFRESH_S": "0.3", "RUNLEDGER_METRICS_PORT": str(self.metrics_port),
                "RUNLEDGER_LOG_FORMAT": "auto",  # the log is a file, not a terminal: JSON lines
                "OTEL_EXPORTER_OTLP_ENDPOINT": self.otlp_endpoint, "OTEL_TRACES_EXPORTER": "none",
                "OTEL_METRIC_EXPORT_INTERVAL": "300", "OTEL_SERVICE_NAME": f"runledger-{self.settings.topic_prefix}"}


@pytest.fixture(scope="module")
async def metered():
    with HttpReceiver() as otlp:
        svc = MeteredService(make_settings(), otlp.endpoint).start()
        try:
            await svc.ready(90)
            yield svc, otlp
        finally:
            svc.stop()


@pytest.fixture
async def http(metered):
    async with httpx.AsyncClient(base_url=metered[0].url, timeout=30) as client:
        yield client


def auth(tenant: str, *roles: str) -> dict:
    return {"Authorization": f"Bearer {token(tenant, 'agent', roles or ROLES)}"}


async def send(http, tenant: str, body: dict, status: int = 200) -> dict:
    response = await http.post("/v1/commands", json=body, headers=auth(tenant))
    assert response.status_code == status, response.text
    return response.json()


async def scrape(http) -> dict:
    response = await http.get("/metrics", headers=OPS)
    assert response.status_code == 200, response.text
    return samples(response.text)


async def scraped_until(http, check, what: str, timeout_s: float = 30) -> dict:
    """Scrape until check(page) holds (counters are added once the processor's transaction has committed)."""
    async def page():
        found = await scrape(http)
        return found if check(found) else None
    return await wait_until(page, timeout_s, what)


async def running_run(http, tenant: str) -> str:
    run = (await send(http, tenant, {"type": "RequestRun", "agent_id": "metered"}))["aggregate_id"]
    await send(http, tenant, {"type": "StartRun", "run_id": run})
    return run


async def test_a_rejection_adds_exactly_one_to_its_code_its_command_type_and_the_round_trip(http):
    tenant, rejected = unique("m-"), {"command_type": "StartRun", "code": "not_found"}
    before = await scrape(http)
    await send(http, tenant, {"type": "StartRun", "run_id": str(uuid.uuid4())}, status=404)
    after = await scraped_until(http, lambda p: value(p, "runledger_processor_rejections_total", **rejected) >
                                value(before, "runledger_processor_rejections_total", **rejected), "the rejection")

    def delta(name: str, **labels) -> float:
        return value(after, name, **labels) - value(before, name, **labels)
    assert delta("runledger_processor_rejections_total", **rejected) == 1
    assert delta("runledger_processor_commands_total", command_type="StartRun", outcome="rejected") == 1
    assert delta("runledger_command_duration_seconds_count", command_type="StartRun", outcome="rejected") == 1
    assert delta("runledger_processor_batch_size_sum", trigger="consumed") == 1
    assert set(series(after, "runledger_processor_rejections_total")) >= {frozenset(rejected.items())}
    # FastAPI's own http.server.request.duration, in the same provider: one more 404 on the commands route
    posts = {labels: v for labels, v in series(after, "http_server_request_duration_seconds_count").items()
             if {("http_route", "/v1/commands"), ("http_response_status_code", "404")} <= labels}
    assert [v - before.get(("http_server_request_duration_seconds_count", labels), 0) for labels, v in posts.items()] \
        == [1]


async def test_a_pending_approval_is_in_the_backlog_of_its_tenant_and_role_with_its_age(http):
    tenant = unique("m-")
    run = await running_run(http, tenant)
    await send(http, tenant, {"type": "RequestApproval", "run_id": run, "action": "wire money", "risk_tier": "high",
                              "required_role": "approver"})
    mine = {"tenant_id": tenant, "required_role": "approver"}
    page = await scraped_until(http, lambda p: value(p, "runledger_approvals_pending", **mine) == 1, "the backlog")
    assert [labels for labels in series(page, "runledger_approvals_pending") if ("tenant_id", tenant) in labels] == \
        [frozenset(mine.items())]
    assert 0 <= value(page, "runledger_approvals_oldest_age_seconds", **mine) < 120
    assert 0 <= value(page, "runledger_metrics_refresh_age_seconds", source="approvals") < 30


async def test_a_cost_shows_in_its_projects_budget_spent_limit_and_utilization(http):
    tenant, project = unique("m-"), "helpdesk"
    await send(http, tenant, {"type": "SetBudget", "project": project, "period": "month", "limit_micros": 1000,
                              "currency": "USD"})
    await send(http, tenant, {"type": "RecordCost", "project": project, "provider": "openai", "model": "m",
                              "amount_micros": 250, "currency": "USD"})
    budget = {"tenant_id": tenant, "project": project, "period": "month", "currency": "USD"}
    page = await scraped_until(http, lambda p: value(p, "runledger_budget_spent", **budget) == 250, "the budget")
    assert (value(page, "runledger_budget_limit", **budget), value(page, "runledger_budget_utilization", **budget)) == \
        (1000, 0.25)


async def test_a_policy_decision_is_counted_by_decision_and_source(http):
    tenant = unique("m-")
    await send(http, tenant, {"type": "PublishPolicy", "policy_id": "p", "version": "1.0.0",
                              "cedar_schema": REQUEST_SCHEMA, "policies": '@id("all") permit(principal, action, resource);'})
    await send(http, tenant, {"type": "ActivatePolicy", "policy_id": "p", "version": "1.0.0"})
    run = await running_run(http, tenant)
    allow = {"decision": "ALLOW", "source": "envelope"}
    before = await scrape(http)
    call = await send(http, tenant, {"type": "RequestToolCall", "run_id": run, "tool": "search", "risk_tier": "low",
                                     "params_digest": "ab" * 32})
    assert call["decision"]["decision"] == "ALLOW"
    after = await scraped_until(http, lambda p: value(p, "runledger_policy_decisions_total", **allow) >
                                value(before, "runledger_policy_decisions_total", **allow), "the decision")
    assert value(after, "runledger_policy_decisions_total", **allow) - \
        value(before, "runledger_policy_decisions_total", **allow) == 1


async def test_an_sse_subscriber_is_counted_while_it_follows_and_each_event_offered_to_it(http):
    tenant, channel = unique("m-"), {"channel": "tenant"}
    before = await scrape(http)
    async with http.stream("GET", "/v1/streams/tenant", headers=auth(tenant)) as stream:
        frames = messages(stream).__aiter__()
        assert (await anext(frames)).comments == ["runledger stream"]
        following = await scrape(http)
        await send(http, tenant, {"type": "RequestRun", "agent_id": "metered"})
        await asyncio.wait_for(anext(frames), 30)  # the run.requested frame, offered once to this one subscriber
        offered = await scraped_until(http, lambda p: value(p, "runledger_sse_offered_total", **channel) >
                                      value(before, "runledger_sse_offered_total", **channel), "the offer")
    assert value(following, "runledger_sse_subscribers", **channel) - value(before, "runledger_sse_subscribers",
                                                                            **channel) == 1
    assert value(offered, "runledger_sse_offered_total", **channel) - \
        value(before, "runledger_sse_offered_total", **channel) == 1
    await scraped_until(http, lambda p: value(p, "runledger_sse_subscribers", **channel) ==
                        value(before, "runledger_sse_subscribers", **channel), "the subscriber to be gone")


async def test_every_projector_reports_lag_per_partition_and_what_it_stored(http, metered):
    await send(http, unique("m-"), {"type": "RequestRun", "agent_id": "metered"})
    names = {cls.name for cls in POSTGRES_PROJECTIONS + CLICKHOUSE_PROJECTIONS}
    partitions = {str(p) for p in range(metered[0].settings.partitions)}

    def complete(p) -> bool:
        lag = series(p, "runledger_projector_lag_events")
        return {(dict(labels)["projector"], dict(labels)["partition"]) for labels in lag} >= \
            {(n, q) for n in names for q in partitions}
    page = await scraped_until(http, complete, "lag of every projector and partition")
    assert {frozenset(dict(labels).keys()) for labels in series(page, "runledger_projector_lag_events")} == \
        {frozenset({"projector", "partition", "status"})}
    assert names <= {dict(labels)["projector"] for labels, v in series(page, "runledger_projector_events_total").items()
                     if v >= 1}


async def test_a_rebuild_reports_its_progress_until_done(http):
    started = await http.post("/v1/ops/projectors/runs/rebuild", headers=OPS)
    assert started.status_code == 202, started.text
    page = await scraped_until(http, lambda p: value(p, "runledger_projector_rebuild_progress",
                                                     projector="runs", state="done") == 1.0, "the rebuild", 60)
    assert value(page, "runledger_projector_rebuild_remaining", projector="runs", state="done") == 0


async def test_after_a_rebuild_the_lag_report_follows_the_generation_that_went_live(http):
    """The API's read models were bound at start; a rebuild swaps in a new generation, which the old binding
    would never see move again: its positions would stay where the swap left them while the log grows."""
    async def report() -> dict[int, dict]:
        response = await http.get("/v1/ops/projectors", headers=OPS)
        assert response.status_code == 200, response.text
        return {row["partition"]: row for row in response.json()["partitions"] if row["projector"] == "approvals"}

    started = await http.post("/v1/ops/projectors/approvals/rebuild", headers=OPS)
    assert started.status_code == 202, started.text

    async def rebuilt():
        status = (await http.get("/v1/ops/projectors/approvals/rebuild", headers=OPS)).json()
        return status if status["state"] != "running" else None
    assert (await wait_until(rebuilt, 60, "the approvals rebuild"))["state"] == "done"
    ends = sum(row["end_offset"] for row in (await report()).values())
    for _ in range(3):
        await send(http, unique("m-"), {"type": "RequestRun", "agent_id": "after-rebuild"})

    async def caught_up():
        rows = await report()
        grown = sum(row["end_offset"] for row in rows.values()) >= ends + 3
        return rows if grown and all(row["position"] == row["end_offset"] for row in rows.values()) else None
    rows = await wait_until(caught_up, 30, "the rebuilt approvals model to be reported caught up")
    assert {row["lag_events"] for row in rows.values()} == {0}


async def test_the_page_needs_an_ops_admin_token_on_the_api_and_none_on_the_loopback_port(http, metered):
    anonymous = await http.get("/metrics")
    customer = await http.get("/metrics", headers=auth(unique("m-"), "admin"))
    assert [(r.status_code, r.json()["code"]) for r in (anonymous, customer)] == [(401, "missing_token"),
                                                                                   (403, "ops_only")]
    async with httpx.AsyncClient(timeout=30) as plain:
        loopback = await plain.get(f"http://127.0.0.1:{metered[0].metrics_port}/metrics")
    assert loopback.status_code == 200
    assert {name for name, _ in samples(loopback.text)} >= {"runledger_processor_commands_total",
                                                           "runledger_projector_lag_events"}


async def test_the_otlp_receiver_gets_the_same_counts_as_the_page(http, metered):
    svc, otlp = metered
    tenant = unique("m-")
    await send(http, tenant, {"type": "CompleteRun", "run_id": str(uuid.uuid4())}, status=404)
    rejected = {"command_type": "CompleteRun", "code": "not_found"}
    page = await scraped_until(http, lambda p: value(p, "runledger_processor_rejections_total", **rejected) == 1,
                               "the rejection on the page")

    def exported():
        return [p for p in otlp.metrics_snapshot() if p.name == "runledger.processor.rejections"
                and p.attributes == rejected and p.value == 1]
    [point, *_] = await wait_until(exported, 30, "the rejection at the OTLP receiver")
    assert (point.service, point.unit) == (f"runledger-{svc.settings.topic_prefix}", "{command}")
    assert value(page, "runledger_processor_rejections_total", **rejected) == point.value


def test_zz_the_service_log_is_json_lines_with_no_secret_in_them(metered):
    svc, _ = metered
    text = svc.log_path.read_text()
    lines = [json.loads(line) for line in text.splitlines()]
    assert lines and all({"time", "level", "logger", "message", "thread"} <= set(line) for line in lines)
    assert {"processor", "projectors", "MainThread"} & {line["thread"] for line in lines}
    assert any(line["logger"] == "runledger.metrics" and "serving metrics" in line["message"] for line in lines)
    for secret in (SECRET, KEK, SIGNING_KEY):
        assert secret not in text
    assert not re.search(r"eyJ[A-Za-z0-9_-]{4,}\.eyJ", text)  # no bearer token either
