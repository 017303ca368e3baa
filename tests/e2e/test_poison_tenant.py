"""Over HTTP against `runledger serve`: a poison event of tenant A holds A, and tenant B on the same
partition keeps being served by every query and stream; A is told its read model is held, ops see where
and why, and anonymous health names the tenant but never the event's content."""
import asyncio

import httpx
import pytest

from infra.entry.client import LedgerClient
from tests.e2e.test_streams import bearer, collect
from tests.integration.test_projectors import append_behind
from tests.support import Service, make_settings, token, unique, wait_until

OPS = {"Authorization": f"Bearer {token('ops', 'oncall', ('admin',))}"}


@pytest.fixture(scope="module")
async def one_partition():
    svc = Service(make_settings(partitions=1)).start()
    try:
        await svc.ready(90)
        yield svc
    finally:
        svc.stop()


async def send(http, tenant: str, body: dict) -> dict:
    outcome = await LedgerClient(http, token(tenant)).send(body)
    assert outcome.accepted, outcome.body
    return outcome.body


async def poison(settings, tenant: str, run_id: str) -> dict:
    """A's next event, sealed on A's chain but holding a NUL no PostgreSQL text column can keep."""
    return await append_behind(settings, tenant, event_id="01a20000-0000-7000-8000-00000000beef", type="run.failed",
                               aggregate_type="run", aggregate_id=run_id, payload={"error": "secret\u0000content"})


async def test_a_poison_of_one_tenant_holds_it_and_the_other_tenant_on_its_partition_is_served(one_partition):
    api = one_partition
    a, b = unique("tenant-a"), unique("tenant-b")
    async with httpx.AsyncClient(base_url=api.url, timeout=30) as http:
        # Given A and B on the one partition, each with a run
        run_a = (await send(http, a, {"type": "RequestRun", "agent_id": "bot"}))["aggregate_id"]
        run_b = (await send(http, b, {"type": "RequestRun", "agent_id": "bot"}))["aggregate_id"]
        # When A's next event is poison and B goes on
        bad = await poison(api.settings, a, run_a)
        started = await send(http, b, {"type": "StartRun", "run_id": run_b})
        seq = started["events"][-1]["chain_seq"]
        # Then B's run, audit and stream answer with B's new event
        run = await http.get(f"/v1/runs/{run_b}", params={"min_seq": seq, "wait_ms": 10000}, headers=bearer(b))
        assert (run.status_code, run.json()["state"]) == (200, "running")
        audit = await http.get("/v1/audit/events", params={"min_seq": seq, "wait_ms": 10000},
                               headers=bearer(b, "auditor"))
        assert [e["type"] for e in audit.json()["items"]] == ["run.started", "run.requested"]
        got = await asyncio.wait_for(collect(api, "/v1/streams/tenant", bearer(b), 2, {"last_event_id": "0"}), 30)
        assert [(m.id, m.event) for m in got] == [("1", "run.requested"), ("2", "run.started")]

        # And A is told, by queries and streams, that its read model is held before the poison
        async def held_answer():
            response = await http.get(f"/v1/runs/{run_a}", headers=bearer(a))
            return response if response.status_code == 503 else None
        held = await wait_until(held_answer, 30, "A's run query to say it is held")
        assert (held.json()["code"], held.json()["details"]["held_before_seq"]) == ("read_model_held", bad["chain_seq"])
        stream = await http.get("/v1/streams/tenant", headers=bearer(a))
        assert (stream.status_code, stream.json()["code"]) == (503, "read_model_held")

        # Ops see which tenant is held where and why; anonymous health names it but quotes nothing
        ops = (await http.get("/v1/ops/projectors", headers=OPS)).json()
        assert sorted((h["projector"], h["tenant_id"], h["chain_seq"]) for h in ops["held"]) == \
            [("channels", a, bad["chain_seq"]), ("runs", a, bad["chain_seq"])]
        assert all(f"tenant {a} chain_seq {bad['chain_seq']}" in h["reason"] for h in ops["held"])
        anonymous = await http.get("/healthz")
        assert (anonymous.status_code, anonymous.json()["projector:runs"]) == (200, "degraded")
        assert anonymous.json()["projector:runs:held"] == [{"tenant_id": a, "partition": 0, "chain_seq": bad["chain_seq"]}]
        assert "secret" not in anonymous.text and "reason" not in anonymous.text
        detailed = (await http.get("/healthz", headers=OPS)).json()
        assert "cannot store this run.failed event" in detailed["projector:runs:held"][0]["reason"]

        # A resume without a fix holds A again at the same event; a tenant that is not held is a 404
        resumed = await http.post(f"/v1/ops/projectors/runs/tenants/{a}/resume", headers=OPS)
        assert resumed.status_code == 202

        async def held_again():
            rows = [h for h in (await http.get("/v1/ops/projectors", headers=OPS)).json()["held"] if h["projector"] == "runs"]
            return rows if rows and not rows[0]["resume_requested"] else None
        again = await wait_until(held_again, 30, "the resume to run and hold A again")
        assert [(h["tenant_id"], h["chain_seq"]) for h in again] == [(a, bad["chain_seq"])]
        not_held = await http.post(f"/v1/ops/projectors/runs/tenants/{b}/resume", headers=OPS)
        assert (not_held.status_code, not_held.json()["code"]) == (404, "not_held")


async def test_an_event_the_audit_model_cannot_read_holds_its_tenant_there_and_only_there(one_partition):
    api = one_partition
    c, b = unique("tenant-c"), unique("tenant-b")
    async with httpx.AsyncClient(base_url=api.url, timeout=30) as http:
        run_c = (await send(http, c, {"type": "RequestRun", "agent_id": "bot"}))["aggregate_id"]
        run_b = (await send(http, b, {"type": "RequestRun", "agent_id": "bot"}))["aggregate_id"]
        # When C's next event has no actor object (the audit row needs the actor's subject)
        env = await append_behind(api.settings, c, event_id="01a20000-0000-7000-8000-00000000cafe", type="run.started",
                                  aggregate_id=run_c, actor=None, payload={})
        seq = (await send(http, b, {"type": "StartRun", "run_id": run_b}))["events"][-1]["chain_seq"]
        # Then the ClickHouse audit model serves B's new event and holds C at it; the runs model applies both
        audit = await http.get("/v1/audit/events", params={"min_seq": seq, "wait_ms": 10000}, headers=bearer(b, "auditor"))
        assert [e["type"] for e in audit.json()["items"]] == ["run.started", "run.requested"]

        async def held_in_audit():
            held = (await http.get("/v1/ops/projectors", headers=OPS)).json()["held"]
            return [(h["projector"], h["tenant_id"], h["chain_seq"]) for h in held if h["tenant_id"] == c] or None
        assert await wait_until(held_in_audit, 30, "C held in audit") == [("audit", c, env["chain_seq"])]
        told = await http.get("/v1/audit/events", headers=bearer(c, "auditor"))
        assert (told.status_code, told.json()["code"], told.json()["details"]["read_model"]) == \
            (503, "read_model_held", "audit")
        run = await http.get(f"/v1/runs/{run_c}", params={"min_seq": env["chain_seq"], "wait_ms": 10000},
                             headers=bearer(c))
        assert (run.status_code, run.json()["state"]) == (200, "running")
