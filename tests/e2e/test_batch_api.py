"""POST /v1/commands/batch and client time against `runledger serve` on the real broker, with the log as witness."""
import asyncio
import json
import uuid
from datetime import datetime, timedelta, timezone

import httpx
import pytest

from commands.processor import CommandProcessor
from tests.support import Service, end_offsets, events, make_settings, read_topic, token, unique, wait_until


@pytest.fixture
def tenant() -> str:
    return unique("tenant-")


def auth(tenant: str, *roles: str) -> dict:
    return {"Authorization": f"Bearer {token(tenant, 'agent', roles or ('operator',))}"}


async def batch(http, tenant: str, items: list, ndjson: bool = False, *roles: str) -> httpx.Response:
    if ndjson:
        body = b"".join(json.dumps(i).encode() + b"\n" for i in items)
        return await http.post("/v1/commands/batch", content=body,
                               headers={**auth(tenant, *roles), "Content-Type": "application/x-ndjson"})
    return await http.post("/v1/commands/batch", json=items, headers=auth(tenant, *roles))


def outcomes(response: httpx.Response) -> list[tuple]:
    assert response.status_code == 200, response.text
    return [(o["index"], o["status"], o.get("code"), [e["type"] for e in o.get("events", [])])
            for o in response.json()["items"]]


def run_of(key: str) -> list[dict]:
    run = str(uuid.uuid4())
    return [{"type": "RequestRun", "idempotency_key": f"{key}-requested", "run_id": run, "agent_id": "a"},
            {"type": "StartRun", "idempotency_key": f"{key}-started", "run_id": run}]


async def chain_of(settings, tenant: str) -> list[dict]:
    return [e for e in await events(settings) if e["tenant_id"] == tenant]


async def commands_of(settings, tenant: str) -> list[dict]:
    return [c for c in (json.loads(r.value) for r in await read_topic(settings, settings.commands_topic))
            if c["tenant_id"] == tenant]


def parse(instant: str) -> datetime:
    return datetime.fromisoformat(instant.replace("Z", "+00:00"))


def now_plus(**delta) -> str:
    return (datetime.now(timezone.utc) + timedelta(**delta)).isoformat()


async def test_a_bad_item_in_the_middle_is_refused_alone_and_nothing_of_it_reaches_the_log(api, http, tenant):
    first, second = run_of("a"), run_of("b")
    deep = {"type": "RequestRun", "idempotency_key": "deep", "agent_id": "a", "labels": json.loads("[" * 33 + "]" * 33)}
    elsewhere = {"type": "PlaceLegalHold", "idempotency_key": "elsewhere", "tenant_id": unique("other-"),
                 "matter": "m", "reason": "r", "scope": {"kind": "tenant"}}
    response = await batch(http, tenant, [first[0], first[1], deep, elsewhere, second[0], second[1]], False,
                           "operator", "admin")
    assert outcomes(response) == [
        (0, "accepted", None, ["run.requested"]), (1, "accepted", None, ["run.started"]),
        (2, "rejected", "too_deeply_nested", []), (3, "rejected", "cross_tenant", []),
        (4, "accepted", None, ["run.requested"]), (5, "accepted", None, ["run.started"])]
    assert response.json()["items"][2]["reason"] == "the body nests arrays or objects deeper than 32 levels"
    acknowledged = [(e["chain_seq"], e["hash"]) for o in response.json()["items"] for e in o.get("events", [])]
    chain = await chain_of(api.settings, tenant)
    assert [(e["chain_seq"], e["hash"]) for e in chain] == acknowledged and [s for s, _ in acknowledged] == [1, 2, 3, 4]
    assert [c["idempotency_key"] for c in await commands_of(api.settings, tenant)] == \
        ["a-requested", "a-started", "b-requested", "b-started"]


async def test_ndjson_and_a_json_array_get_the_same_outcomes(http):
    answers = []
    for ndjson in (False, True):
        items = run_of(f"same-{ndjson}")
        items += [{"type": "StartRun", "idempotency_key": f"again-{ndjson}", "run_id": items[0]["run_id"]},
                  {"type": "RequestRun", "agent_id": "no key"}]
        answers.append(outcomes(await batch(http, unique("tenant-"), items, ndjson)))
    assert answers[0] == answers[1] == [(0, "accepted", None, ["run.requested"]), (1, "accepted", None, ["run.started"]),
                                        (2, "rejected", "invalid_state", []),
                                        (3, "rejected", "missing_idempotency_key", [])]


async def test_two_consecutive_batches_keep_each_tenants_order(api, http):
    tenants = [unique("left-"), unique("right-")]
    runs = {t: [str(uuid.uuid4()) for _ in range(3)] for t in tenants}
    requested = {t: [{"type": "RequestRun", "idempotency_key": f"r{i}", "run_id": r, "agent_id": "a"}
                     for i, r in enumerate(runs[t])] for t in tenants}
    started = {t: [{"type": "StartRun", "idempotency_key": f"s{i}", "run_id": r}
                   for i, r in enumerate(reversed(runs[t]))] for t in tenants}
    for step in (requested, started):  # each tenant's second batch goes once its first is answered
        answered = await asyncio.gather(*(batch(http, t, step[t]) for t in tenants))
        assert [o[1] for a in answered for o in outcomes(a)] == ["accepted"] * 6
    for t in tenants:
        chain = [(e["chain_seq"], e["type"], e["aggregate_id"]) for e in await chain_of(api.settings, t)]
        assert chain == [(i + 1, "run.requested", r) for i, r in enumerate(runs[t])] + \
            [(4 + i, "run.started", r) for i, r in enumerate(reversed(runs[t]))]


async def test_too_many_commands_refuse_the_batch_and_the_log_does_not_move(api, http, tenant):
    s = api.settings
    before = await end_offsets(s, s.commands_topic)
    items = [{"type": "RequestRun", "idempotency_key": f"k{i}", "agent_id": "a"} for i in range(s.batch_max + 1)]
    refused = await batch(http, tenant, items)
    assert (refused.status_code, refused.json()) == (413, {
        "status": "rejected", "code": "too_many_commands",
        "reason": f"the batch has more than {s.batch_max} commands, the most one request may carry "
                  "(RUNLEDGER_BATCH_MAX); split it"})
    assert await end_offsets(s, s.commands_topic) == before


async def test_occurred_at_out_of_bounds_is_refused_with_its_code_and_nothing_is_appended(api, http, tenant):
    base = {"type": "RequestRun", "agent_id": "a"}
    items = [{**base, "idempotency_key": "ahead", "occurred_at": now_plus(seconds=api.settings.clock_skew_s + 120)},
             {**base, "idempotency_key": "old", "occurred_at": now_plus(seconds=-api.settings.client_time_horizon_s - 120)},
             {**base, "idempotency_key": "naive", "occurred_at": datetime.now().isoformat()}]
    response = await batch(http, tenant, items)
    assert outcomes(response) == [(0, "rejected", "occurred_at_in_future", []), (1, "rejected", "occurred_at_too_old", []),
                                  (2, "rejected", "invalid_occurred_at", [])]
    reasons = [o["reason"] for o in response.json()["items"]]
    assert "RUNLEDGER_CLOCK_SKEW_S = 300 s ahead is accepted" in reasons[0]
    assert "RUNLEDGER_CLIENT_TIME_HORIZON_S = 2592000 s back is accepted" in reasons[1]
    assert await chain_of(api.settings, tenant) == []
    single = await http.post("/v1/commands", headers=auth(tenant), json={**base, "occurred_at": now_plus(hours=1)})
    assert (single.status_code, single.json()["code"]) == (422, "occurred_at_in_future")
    assert await chain_of(api.settings, tenant) == []


async def test_a_valid_occurred_at_is_on_every_event_of_its_command_and_discovery_finds_it_by_it(api, http, tenant):
    at = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(days=2, minutes=7)
    stated = at.astimezone(timezone(timedelta(hours=-5))).isoformat()  # the agent's clock, in its own offset
    run = run_of("t")
    call = {"type": "RequestToolCall", "idempotency_key": "call", "run_id": run[0]["run_id"], "tool": "shell",
            "risk_tier": "high", "params_digest": "e" * 64, "occurred_at": stated}
    response = await batch(http, tenant, run + [call])
    assert [o[1] for o in outcomes(response)] == ["accepted"] * 3
    call_events = response.json()["items"][2]["events"]
    chain = {e["chain_seq"]: e for e in await chain_of(api.settings, tenant)}
    expected = at.strftime("%Y-%m-%dT%H:%M:%S.000000Z")
    assert len(call_events) >= 2 and {chain[e["chain_seq"]]["occurred_at"] for e in call_events} == {expected}
    assert all(chain[s]["recorded_at"] > expected for s in (e["chain_seq"] for e in call_events))
    auditor = {"Authorization": f"Bearer {token(tenant, 'auditor-1', ('auditor',))}"}
    window = {"since": (at - timedelta(seconds=1)).isoformat(), "until": (at + timedelta(seconds=1)).isoformat(),
              "min_seq": max(chain), "wait_ms": 10000}
    by_occurred = await http.get("/v1/audit/events", headers=auditor, params={**window, "time": "occurred"})
    by_recorded = await http.get("/v1/audit/events", headers=auditor, params=window)
    assert (by_occurred.status_code, by_recorded.status_code) == (200, 200), by_occurred.text
    found = [(e["chain_seq"], parse(e["occurred_at"])) for e in by_occurred.json()["items"]]
    assert found == [(e["chain_seq"], at) for e in reversed(call_events)]
    assert by_recorded.json()["items"] == []


async def test_a_batch_sent_again_after_a_timeout_gets_its_first_outcomes_and_nothing_is_doubled(tenant):
    settings = make_settings(command_timeout_s=1.0)
    items = run_of("retry") + [{"type": "CompleteRun", "idempotency_key": "retry-done", "run_id": "not-a-uuid"}]
    api = Service(settings, processor=False).start()  # nothing decides: every outcome is late
    try:
        await api.ready(90, owning=False)
        async with httpx.AsyncClient(base_url=api.url, timeout=30) as http:
            late = await batch(http, tenant, items)
            assert outcomes(late) == [(0, "pending", "outcome_pending", []), (1, "pending", "outcome_pending", []),
                                      (2, "rejected", "invalid_command", [])]
            processor, stop = CommandProcessor(settings), asyncio.Event()
            running = asyncio.create_task(processor.run(stop))
            try:
                await wait_until(lambda: len(processor.owners) == settings.partitions, 60, "the processor to own")
                again = await batch(http, tenant, items)
            finally:
                stop.set()
                await asyncio.wait_for(running, 60)
    finally:
        api.stop()
    assert outcomes(again) == [(0, "accepted", None, ["run.requested"]), (1, "accepted", None, ["run.started"]),
                               (2, "rejected", "invalid_command", [])]
    first_ids = [o["command_id"] for o in late.json()["items"][:2]]
    assert [(o["replayed"], o["original_command_id"]) for o in again.json()["items"][:2]] == \
        [(True, first_ids[0]), (True, first_ids[1])]
    chain = await chain_of(settings, tenant)
    assert [(e["chain_seq"], e["type"], e["command_id"]) for e in chain] == \
        [(1, "run.requested", first_ids[0]), (2, "run.started", first_ids[1])]
    assert [e["hash"] for o in again.json()["items"][:2] for e in o["events"]] == [e["hash"] for e in chain]
