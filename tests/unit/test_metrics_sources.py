"""Where the metrics come from: the processor on the in-memory log (counted once, at commit; aborts and fencing),
the SSE hub (subscribers, offers, overflows and what they drop), and the read-model gauges' bounded refreshes."""
import asyncio
import json
import uuid
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader

from commands.processor import CommandProcessor
from infra.adapters.eventlog import TopicPartition
from infra.adapters.eventlog.memory import MemoryLog
from infra.adapters.meters import StreamMeters
from queries.metrics import ApprovalBacklog, BudgetUse, RebuildProgress, Refreshing, Staleness
from streams.hub import OVERFLOW, ChannelHub
from tests.support import command, make_settings, unique, wait_until


class Points:
    """An in-memory reader's data: (name, attributes) → value, or (count, sum) for a histogram."""

    def __init__(self):
        self.reader = InMemoryMetricReader()
        self.meter = MeterProvider(metric_readers=[self.reader]).get_meter("runledger")

    def read(self) -> dict:
        data = self.reader.get_metrics_data()
        return {(m.name, frozenset(p.attributes.items())):
                (p.count, p.sum) if isinstance(p, HistogramDataPoint) else p.value
                for rm in (data.resource_metrics if data else ()) for sm in rm.scope_metrics
                for m in sm.metrics for p in m.data.data_points}

    def named(self, name: str) -> dict:
        return {attributes: v for (n, attributes), v in self.read().items() if n == name}


def labels(**values) -> frozenset:
    return frozenset(values.items())


def twin(settings) -> MemoryLog:
    return MemoryLog([settings.commands_topic, settings.events_topic, settings.replies_topic], settings.partitions)


def replied(log: MemoryLog, settings, commands: list[dict]):
    ids = {c["command_id"] for c in commands}
    got = {json.loads(r.value)["command_id"] for p in range(log.partitions)
           for r in log.visible(TopicPartition(settings.replies_topic, p), 0)}
    return ids <= got


def send(log: MemoryLog, settings, commands: list[dict]) -> None:
    for c in commands:
        log.produce(settings.commands_topic, c["tenant_id"].encode(), json.dumps(c).encode())


async def test_the_processor_counts_what_commits_once_and_a_fenced_abort_by_its_reason_and_partition():
    settings = make_settings(partitions=1)
    log, points, tenant = twin(settings), Points(), unique("t")
    processor = CommandProcessor(settings, log_=log, meter=points.meter)
    processor.fenced_backoff_s = 0.0
    stop = asyncio.Event()
    task = asyncio.create_task(processor.run(stop))
    try:
        await wait_until(lambda: processor.owners, 10, "the processor to own partition 0")
        run = str(uuid.uuid4())
        first = [command(tenant, {"type": "RequestRun", "agent_id": "a", "run_id": run})]
        send(log, settings, first)
        await wait_until(lambda: replied(log, settings, first), 10, "the first reply")
        usurped = []

        async def usurp_once(transactional_id: str) -> None:
            if not usurped:  # a newer epoch: this commit is refused, and the batch decided again after a rebuild
                usurped.append(log.transactional_writer(transactional_id))
                await usurped[0].start()
        log.before_commit = usurp_once
        second = [command(tenant, {"type": "StartRun", "run_id": run}),
                  command(tenant, {"type": "StartRun", "run_id": str(uuid.uuid4())})]
        send(log, settings, second)
        await wait_until(lambda: replied(log, settings, second), 10, "the second batch's replies")
        await wait_until(lambda: processor.owners, 10, "partition 0 owned again")
        found = points.read()
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
    assert points.named("runledger.processor.commands") == {
        labels(command_type="RequestRun", outcome="accepted"): 1, labels(command_type="StartRun", outcome="accepted"): 1,
        labels(command_type="StartRun", outcome="rejected"): 1}
    assert points.named("runledger.processor.rejections") == {labels(command_type="StartRun", code="not_found"): 1}
    transactions = points.named("runledger.processor.transactions")
    assert transactions[labels(trigger="consumed", outcome="aborted", reason="fenced")] == 1
    assert sum(n for attributes, n in transactions.items() if ("outcome", "committed") in attributes) >= 2
    assert points.named("runledger.processor.fenced") == {labels(partition="0"): 1}
    assert points.named("runledger.processor.batch.size")[labels(trigger="consumed")][1] == 3  # 3 commands committed
    assert points.named("runledger.processor.partition.rebuild.duration")[frozenset()][0] == 2  # acquired twice
    assert found[("runledger.processor.partitions", labels(state="owned"))] == 1


class Hub(ChannelHub):
    """The hub with its channel rows given, not read from PostgreSQL."""

    async def rows(self, schema, tenant_id, channel, after, upto=None, limit=1000):
        return [{"seq": seq, "type": "run.started", "envelope": "{}"} for seq in range(after + 1, upto + 1)]


async def test_the_hub_counts_subscribers_by_channel_kind_offers_overflows_and_what_an_overflow_drops():
    points = Points()
    hub = Hub("", None, "p", buffer=2, meters=StreamMeters(points.meter))
    slow, other = hub.subscribe("t", "run:abc"), hub.subscribe("t", "run:def")
    fast = hub.subscribe("t", "tenant")
    assert points.named("runledger.sse.subscribers") == {labels(channel="run"): 2, labels(channel="tenant"): 1}
    hub.delivered[("t", "run:abc")] = 0  # as if seq 0 had been handed out: the notification brings 1..5
    await hub.dispatch({"schema": "s", "channels": [["t", "run:abc", 5], ["t", "tenant", 1]]})
    # slow took 2 of the 5, overflowed at the 3rd (dropping the 2 queued and that one), then missed 2 more
    assert (slow.overflowed, slow.queue.qsize(), slow.queue.get_nowait() is OVERFLOW) == (True, 1, True)
    assert points.named("runledger.sse.offered") == {labels(channel="run"): 5, labels(channel="tenant"): 1}
    assert points.named("runledger.sse.overflows") == {labels(channel="run"): 1}
    assert points.named("runledger.sse.dropped") == {labels(channel="run"): 5}
    for sub in (slow, slow, other, fast):  # a second unsubscribe of the same subscriber changes nothing
        hub.unsubscribe(sub)
    assert points.named("runledger.sse.subscribers") == {labels(channel="run"): 0, labels(channel="tenant"): 0}


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Source(Refreshing):
    source = "test"

    def __init__(self, **kw):
        super().__init__(**kw)
        self.calls, self.release, self.fail, self.value = 0, asyncio.Event(), False, None

    async def fetch(self) -> None:
        self.calls += 1
        await self.release.wait()
        if self.fail:
            raise ConnectionError("store down")
        self.value = self.calls


async def test_a_refresh_is_bounded_by_its_timeout_never_doubled_and_its_age_and_failures_are_published():
    points, clock = Points(), Clock()
    source = Source(timeout_s=0.05, clock=clock)
    Staleness([source]).register(points.meter)
    clock.now = 130.0
    assert await source.refresh() is False  # hangs: given up after the timeout, left running
    assert await source.refresh() is False  # the same fetch is waited on again, not a second one
    assert (source.calls, points.named("runledger.metrics.refresh.age")) == (1, {labels(source="test"): 30.0})
    source.release.set()
    assert (await source.refresh(), source.value, source.calls) == (True, 1, 1)
    clock.now = 131.5
    assert points.named("runledger.metrics.refresh.age") == {labels(source="test"): 1.5}
    source.fail = True
    assert await source.refresh() is False
    assert source.value == 1  # the last values stand
    assert points.named("runledger.metrics.refresh.failures") == {
        labels(source="test", reason="timeout"): 2, labels(source="test", reason="error"): 1}


def test_the_backlog_publishes_counts_and_the_oldest_age_at_observation_time():
    now = datetime(2026, 5, 1, 12, 0, tzinfo=timezone.utc)
    points = Points()
    backlog = ApprovalBacklog(None, "p", now=lambda: now)
    backlog.register(points.meter)
    backlog.rows = [{"tenant_id": "acme", "required_role": "approver", "pending": 3,
                     "oldest": now - timedelta(minutes=2)},
                    {"tenant_id": "beta", "required_role": "admin", "pending": 1, "oldest": now - timedelta(seconds=5)}]
    assert points.named("runledger.approvals.pending") == {
        labels(tenant_id="acme", required_role="approver"): 3, labels(tenant_id="beta", required_role="admin"): 1}
    assert points.named("runledger.approvals.oldest.age") == {
        labels(tenant_id="acme", required_role="approver"): 120.0, labels(tenant_id="beta", required_role="admin"): 5.0}


def test_budgets_publish_spent_limit_and_the_share_used_per_project():
    points = Points()
    budgets = BudgetUse(None)
    budgets.register(points.meter)
    budgets.rows = [{"tenant_id": "acme", "project": "web", "period": "month", "currency": "USD",
                     "limit_micros": 2_000_000, "used_micros": 500_000}]
    project = labels(tenant_id="acme", project="web", period="month", currency="USD")
    assert (points.named("runledger.budget.spent"), points.named("runledger.budget.limit"),
            points.named("runledger.budget.utilization")) == ({project: 500_000}, {project: 2_000_000}, {project: 0.25})


def test_rebuild_progress_is_the_share_of_offsets_replayed_and_what_remains():
    points = Points()
    jobs = SimpleNamespace(jobs={"runs": SimpleNamespace(projector="runs", state="running", done=30, total=120),
                                 "audit": SimpleNamespace(projector="audit", state="done", done=7, total=7)})
    RebuildProgress(jobs).register(points.meter)
    assert points.named("runledger.projector.rebuild.progress") == {
        labels(projector="runs", state="running"): 0.25, labels(projector="audit", state="done"): 1.0}
    assert points.named("runledger.projector.rebuild.remaining") == {
        labels(projector="runs", state="running"): 90, labels(projector="audit", state="done"): 0}
