"""POST /v1/commands/batch in process: the real route, bus and processor on the in-memory event log."""
import json
import uuid
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import httpx

from commands.api import routes_commands
from commands.bus import CommandBus
from infra.adapters.eventlog import TopicPartition
from infra.adapters.eventlog.memory import MemoryLog
from infra.adapters.http.app import create_app
from infra.adapters.settings import Settings
from tests.support import make_settings, token, unique
from tests.unit.test_processor_on_twin import running

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=timezone.utc)
NDJSON = {"Content-Type": "application/x-ndjson"}


@dataclass
class Api:
    http: httpx.AsyncClient
    log: MemoryLog
    settings: Settings

    async def batch(self, tenant: str, items, *roles: str, ndjson: bool = False, headers: dict | None = None):
        headers = {**auth(tenant, *roles), **(NDJSON if ndjson else {}), **(headers or {})}
        if ndjson:
            return await self.http.post("/v1/commands/batch", content=lines(items), headers=headers)
        if isinstance(items, bytes):
            return await self.http.post("/v1/commands/batch", content=items, headers=headers)
        return await self.http.post("/v1/commands/batch", json=items, headers=headers)

    def topic(self, name: str) -> list[dict]:
        return [json.loads(r.value) for p in range(self.log.partitions)
                for r in self.log.visible(TopicPartition(f"{self.settings.topic_prefix}.{name}", p), 0)]

    def chain(self, tenant: str) -> list[tuple[int, str]]:
        return [(e["chain_seq"], e["type"]) for e in self.topic("events") if e["tenant_id"] == tenant]


def processing(settings: Settings, log: MemoryLog, clock=lambda: NOW):
    return running(settings, log, clock, owning=settings.partitions)


@asynccontextmanager
async def serving(settings: Settings, log: MemoryLog):
    bus = CommandBus(settings, log)
    await bus.start()
    app = create_app(settings, [routes_commands.router], {"bus": bus})
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://twin") as http:
            yield Api(http, log, settings)
    finally:
        await bus.stop()


def twin(**overrides) -> tuple[Settings, MemoryLog]:
    settings = make_settings(partitions=2, **overrides)
    return settings, MemoryLog([settings.commands_topic, settings.events_topic, settings.replies_topic], 2)


@asynccontextmanager
async def api(**overrides):
    settings, log = twin(**overrides)
    async with processing(settings, log), serving(settings, log) as client:
        yield client


def auth(tenant: str, *roles: str) -> dict:
    return {"Authorization": f"Bearer {token(tenant, 'agent', roles or ('operator',))}"}


def lines(items: list) -> bytes:
    return b"".join((i if isinstance(i, bytes) else json.dumps(i).encode()) + b"\n" for i in items)


def run_of(key: str, run: str | None = None) -> list[dict]:
    run = run or str(uuid.uuid4())
    return [{"type": "RequestRun", "idempotency_key": f"{key}-requested", "run_id": run, "agent_id": "a"},
            {"type": "StartRun", "idempotency_key": f"{key}-started", "run_id": run}]


def outcomes(response: httpx.Response) -> list[tuple]:
    assert response.status_code == 200, response.text
    return [(o["index"], o["status"], o.get("code"), [e["type"] for e in o.get("events", [])])
            for o in response.json()["items"]]


async def test_a_bad_item_in_the_middle_is_refused_alone_with_its_index_and_the_others_are_decided_in_order():
    async with api() as client:
        tenant = unique("t")
        first, second = run_of("one"), run_of("two")
        bad = {"type": "RequestRun", "idempotency_key": "bad", "agent_id": "a", "labels": {"k": "v\x00"}}
        response = await client.batch(tenant, [first[0], first[1], bad, second[0], second[1]])
        body = response.json()
        assert outcomes(response) == [(0, "accepted", None, ["run.requested"]), (1, "accepted", None, ["run.started"]),
                                      (2, "rejected", "invalid_text", []), (3, "accepted", None, ["run.requested"]),
                                      (4, "accepted", None, ["run.started"])]
        assert (body["accepted"], body["rejected"], body["pending"]) == (4, 1, 0)
        assert body["items"][2] == {
            "index": 2, "idempotency_key": "bad", "status": "rejected", "code": "invalid_text",
            "reason": "labels.k: has NUL (U+0000 at position 1), which PostgreSQL cannot store",
            "details": [{"field": "labels.k", "problem": "has NUL (U+0000 at position 1), which PostgreSQL cannot store"}]}
        assert [e["chain_seq"] for o in body["items"] for e in o.get("events", [])] == [1, 2, 3, 4]
        assert client.chain(tenant) == [(1, "run.requested"), (2, "run.started"), (3, "run.requested"),
                                        (4, "run.started")]
        assert "bad" not in {c["idempotency_key"] for c in client.topic("commands")}


async def test_every_kind_of_bad_item_is_refused_alone():
    async with api(max_body_bytes=1024) as client:
        tenant = unique("t")
        good = run_of("g")
        deep = json.dumps({"type": "RequestRun", "idempotency_key": "deep", "agent_id": "a",
                           "labels": json.loads("[" * 40 + "]" * 40)})
        items = [good[0],
                 b'{"type": "StartRun", "idempotency_key": "dup", "run_id": "x", "run_id": "y"}',
                 deep.encode(),
                 b'{"type": "RequestRun", "agent_id": "a", "idempotency_key": "nan", "budget_micros": NaN}',
                 {"type": "RequestRun", "agent_id": "a"},
                 {"type": "RequestRun", "agent_id": "a", "idempotency_key": "has space"},
                 {"type": "SetBudget", "idempotency_key": "role", "project": "p", "period": "day", "limit_micros": 1,
                  "currency": "USD"},
                 {"type": "ExpireApproval", "idempotency_key": "system", "approval_id": str(uuid.uuid4())},
                 {"type": "RequestRun", "idempotency_key": "big", "agent_id": "a", "labels": {"k": "v" * 2000}},
                 b'{"type": "RequestRun", "idempotency_key": "cut", ',
                 {"type": "StartRun", "idempotency_key": "missing"},
                 good[1]]
        codes = [(0, "accepted"), (1, "duplicate_key"), (2, "too_deeply_nested"), (3, "malformed_json"),
                 (4, "missing_idempotency_key"), (5, "invalid_idempotency_key"), (6, "missing_role"),
                 (7, "system_command"), (8, "item_too_large"), (9, "malformed_json"), (10, "invalid_command"),
                 (11, "accepted")]
        answer = await client.batch(tenant, items, ndjson=True)
        assert [(i, c or s) for i, s, c, _ in outcomes(answer)] == codes
        big = answer.json()["items"][8]["reason"]
        assert big.startswith("the command is 20") and big.endswith("RUNLEDGER_MAX_BODY_BYTES = 1024")
        assert client.chain(tenant) == [(1, "run.requested"), (2, "run.started")]
        assert len(client.topic("commands")) == 2


async def test_a_json_array_and_ndjson_get_the_same_outcomes():
    async with api() as client:
        results = []
        for ndjson in (False, True):
            run = str(uuid.uuid4())
            items = [*run_of(f"same-{ndjson}", run), {"type": "CompleteRun", "idempotency_key": f"c-{ndjson}",
                                                       "run_id": run},
                     {"type": "StartRun", "idempotency_key": f"s-{ndjson}", "run_id": run},
                     {"type": "NoSuchCommand", "idempotency_key": f"n-{ndjson}"}]
            results.append(outcomes(await client.batch(unique("t"), items, ndjson=ndjson)))
        assert results[0] == results[1] == [
            (0, "accepted", None, ["run.requested"]), (1, "accepted", None, ["run.started"]),
            (2, "accepted", None, ["run.succeeded"]), (3, "rejected", "invalid_state", []),
            (4, "rejected", "unknown_command_type", [])]


async def test_request_level_problems_refuse_the_whole_batch_and_nothing_is_produced():
    async with api(batch_max=3, max_batch_bytes=2048) as client:
        tenant, three = unique("t"), [{"type": "RequestRun", "idempotency_key": f"k{i}", "agent_id": "a"} for i in range(3)]
        refused = {
            "too many": await client.batch(tenant, three + [three[0]]),
            "too many lines": await client.batch(tenant, three + [three[0]], ndjson=True),
            "too large": await client.batch(tenant, [{**three[0], "labels": {"k": "v" * 1000}}] * 3),
            "an object": await client.batch(tenant, three[0]),
            "not json": await client.batch(tenant, b"[{], nope"),
            "unended string": await client.batch(tenant, b'[{"type": "RequestRun", "agent_id": "a}]'),
            "empty": await client.batch(tenant, []),
            "blank lines": await client.batch(tenant, b"\n \r\n", headers=NDJSON),
            "media type": await client.batch(tenant, three, headers={"Content-Type": "text/csv"}),
            "header key": await client.batch(tenant, three, headers={"Idempotency-Key": "k"}),
            "no token": await client.http.post("/v1/commands/batch", json=three),
        }
        answers = {label: (r.status_code, r.json()["code"]) for label, r in refused.items()}
        assert answers == {
            "too many": (413, "too_many_commands"), "too many lines": (413, "too_many_commands"),
            "too large": (413, "body_too_large"), "an object": (400, "malformed_batch"),
            "not json": (400, "malformed_batch"), "unended string": (400, "malformed_batch"),
            "empty": (422, "empty_batch"), "blank lines": (422, "empty_batch"),
            "media type": (415, "unsupported_media_type"), "header key": (422, "idempotency_key_per_item"),
            "no token": (401, "missing_token")}
        assert refused["too many"].json()["reason"] == (
            "the batch has more than 3 commands, the most one request may carry (RUNLEDGER_BATCH_MAX); split it")
        assert client.topic("commands") == []
        assert outcomes(await client.batch(tenant, three)) == [(i, "accepted", None, ["run.requested"]) for i in range(3)]


async def test_a_batch_sent_again_after_no_outcome_in_time_gets_the_first_outcomes_and_doubles_nothing():
    settings, log = twin(command_timeout_s=0.3)
    tenant, items = unique("t"), run_of("again") + [{"type": "StartRun", "idempotency_key": "x", "run_id": "nope"}]
    async with serving(settings, log) as client:
        first = await client.batch(tenant, items)  # no processor yet: nothing is decided in time
        assert outcomes(first) == [(0, "pending", "outcome_pending", []), (1, "pending", "outcome_pending", []),
                                   (2, "rejected", "invalid_command", [])]
        assert first.json()["pending"] == 2
        async with processing(settings, log):
            again = await client.batch(tenant, items)
            assert outcomes(again) == [(0, "accepted", None, ["run.requested"]), (1, "accepted", None, ["run.started"]),
                                       (2, "rejected", "invalid_command", [])]
            queued = {o["command_id"] for o in first.json()["items"][:2]}
            assert [(o["replayed"], o["original_command_id"] in queued) for o in again.json()["items"][:2]] == \
                [(True, True), (True, True)]
            third = await client.batch(tenant, items)
            assert [e["hash"] for o in third.json()["items"][:2] for e in o["events"]] == \
                [e["hash"] for o in again.json()["items"][:2] for e in o["events"]]
        assert client.chain(tenant) == [(1, "run.requested"), (2, "run.started")]


async def test_each_tenants_commands_keep_their_order_across_consecutive_batches():
    async with api() as client:
        ops = unique("t")
        runs = [str(uuid.uuid4()) for _ in range(4)]
        first = [{"type": "RequestRun", "idempotency_key": f"r{i}", "run_id": r, "agent_id": f"a{i}"}
                 for i, r in enumerate(runs)]
        second = [{"type": "StartRun", "idempotency_key": f"s{i}", "run_id": r} for i, r in reversed(list(enumerate(runs)))]
        for batch in (first, second):
            assert {o[1] for o in outcomes(await client.batch(ops, batch))} == {"accepted"}
        mine = [e for e in client.topic("events") if e["tenant_id"] == ops]
        assert [(e["chain_seq"], e["type"], e["aggregate_id"]) for e in mine] == \
            [(i + 1, "run.requested", r) for i, r in enumerate(runs)] + \
            [(5 + i, "run.started", r) for i, r in enumerate(reversed(runs))]


async def test_an_ops_admin_batch_is_routed_to_each_named_tenant_in_order():
    async with api() as client:
        ops, left, right = client.settings.ops_tenant, unique("l"), unique("r")
        hold = {"type": "PlaceLegalHold", "matter": "m", "reason": "r", "scope": {"kind": "tenant"}}
        items = [{**hold, "idempotency_key": f"h{i}", "tenant_id": t} for i, t in enumerate([left, right, left])]
        answer = await client.batch(ops, items, "admin")
        assert outcomes(answer) == [(i, "accepted", None, ["legal_hold.placed"]) for i in range(3)]
        assert (client.chain(left), client.chain(right)) == ([(1, "legal_hold.placed"), (2, "legal_hold.placed")],
                                                             [(1, "legal_hold.placed")])
        other_admin = await client.batch(unique("t"), [{**items[0], "idempotency_key": "x"}, items[1]], "admin")
        assert outcomes(other_admin) == [(0, "rejected", "cross_tenant", []), (1, "rejected", "cross_tenant", [])]
        assert other_admin.json()["items"][0]["reason"] == (
            f"PlaceLegalHold names tenant {left!r}: only an admin of the platform's ops tenant (a super_admin) may act "
            "on another tenant")
        assert len(client.chain(left)) == 2


async def test_occurred_at_is_the_time_of_every_event_of_its_command_and_recorded_at_the_processors():
    async with api() as client:
        tenant = unique("t")
        run = str(uuid.uuid4())
        call = {"type": "RequestToolCall", "idempotency_key": "call", "run_id": run, "tool": "shell",
                "risk_tier": "high", "params_digest": "e" * 64, "occurred_at": "2026-12-01T13:58:30.5+02:00"}
        answer = await client.batch(tenant, run_of("t", run) + [call])
        assert [o[1] for o in outcomes(answer)] == ["accepted"] * 3
        events = [e for e in client.topic("events") if e["tenant_id"] == tenant]
        of_call = [e for e in events if e["command_id"] == answer.json()["items"][2]["command_id"]]
        assert len(of_call) >= 2
        assert {(e["occurred_at"], e["recorded_at"]) for e in of_call} == \
            {("2026-12-01T11:58:30.500000Z", "2026-12-01T12:00:00.000000Z")}
        assert all(e["occurred_at"] != "2026-12-01T11:58:30.500000Z" for e in events if e not in of_call)


async def test_occurred_at_out_of_bounds_or_without_an_offset_is_refused_with_its_code_and_appends_nothing():
    async with api(clock_skew_s=60, client_time_horizon_s=3600) as client:
        tenant, at = unique("t"), lambda delta: (NOW + delta).isoformat()
        base = {"type": "RequestRun", "agent_id": "a"}
        items = [{**base, "idempotency_key": "ahead", "occurred_at": at(timedelta(seconds=61))},
                 {**base, "idempotency_key": "old", "occurred_at": at(-timedelta(seconds=3601))},
                 {**base, "idempotency_key": "naive", "occurred_at": "2026-12-01T11:59:00"},
                 {**base, "idempotency_key": "number", "occurred_at": 1796126400},
                 {**base, "idempotency_key": "edge-ahead", "occurred_at": at(timedelta(seconds=60))},
                 {**base, "idempotency_key": "edge-old", "occurred_at": at(-timedelta(seconds=3600))}]
        answer = await client.batch(tenant, items)
        assert outcomes(answer) == [(0, "rejected", "occurred_at_in_future", []),
                                    (1, "rejected", "occurred_at_too_old", []),
                                    (2, "rejected", "invalid_occurred_at", []),
                                    (3, "rejected", "invalid_occurred_at", []),
                                    (4, "accepted", None, ["run.requested"]), (5, "accepted", None, ["run.requested"])]
        reasons = [o["reason"] for o in answer.json()["items"][:3]]
        assert reasons == [
            "occurred_at 2026-12-01T12:01:01.000000Z is 61.000 s ahead of runledger's clock "
            "(2026-12-01T12:00:00.000000Z); at most RUNLEDGER_CLOCK_SKEW_S = 60 s ahead is accepted",
            "occurred_at 2026-12-01T10:59:59.000000Z is 3601.000 s before runledger's clock "
            "(2026-12-01T12:00:00.000000Z); at most RUNLEDGER_CLIENT_TIME_HORIZON_S = 3600 s back is accepted",
            "occurred_at: must be an RFC 3339 date-time with an offset, e.g. 2026-05-01T12:00:00.250+02:00"]
        assert [e["occurred_at"] for e in client.topic("events") if e["tenant_id"] == tenant] == \
            ["2026-12-01T12:01:00.000000Z", "2026-12-01T11:00:00.000000Z"]


async def test_the_single_command_route_takes_occurred_at_too():
    async with api() as client:
        tenant = unique("t")
        headers = auth(tenant)
        sent = await client.http.post("/v1/commands", headers=headers, json={
            "type": "RequestRun", "agent_id": "a", "occurred_at": "2026-12-01T11:00:00Z"})
        ahead = await client.http.post("/v1/commands", headers=headers, json={
            "type": "RequestRun", "agent_id": "a", "occurred_at": "2026-12-01T12:06:00Z"})
        assert (sent.status_code, ahead.status_code, ahead.json()["code"]) == (200, 422, "occurred_at_in_future")
        assert [e["occurred_at"] for e in client.topic("events") if e["tenant_id"] == tenant] == \
            ["2026-12-01T11:00:00.000000Z"]


async def test_a_batch_has_one_send_span_under_the_request_and_every_command_carries_its_context():
    from opentelemetry.trace import SpanKind
    from tests.unit.test_tracing import Spans, traceparent
    from tests.support import command
    settings, log = twin()
    spans = Spans()
    tenant = unique("t")
    sent = [command(tenant, body) for body in ({"type": "RequestRun", "agent_id": "a"},) * 3]
    bus = CommandBus(settings, log, spans.tracer)
    await bus.start()
    try:
        async with processing(settings, log):
            with spans.tracer.start_as_current_span("POST /v1/commands/batch", kind=SpanKind.SERVER) as http:
                replies = await bus.submit_many(sent)
    finally:
        await bus.stop()
    send = spans.one(f"send {settings.commands_topic}")
    assert [r["status"] for r in replies] == ["accepted"] * 3
    assert (send.kind, send.parent.span_id, send.attributes["messaging.batch.message_count"]) == \
        (SpanKind.PRODUCER, http.get_span_context().span_id, 3)
    records = [r for p in range(log.partitions) for r in log.visible(TopicPartition(settings.commands_topic, p), 0)]
    events = [e for e in Api(None, log, settings).topic("events") if e["tenant_id"] == tenant]
    assert {json.loads(r.value)["traceparent"] for r in records} == {e["traceparent"] for e in events} == \
        {traceparent(send)}
