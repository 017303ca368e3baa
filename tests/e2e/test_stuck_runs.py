"""Stuck runs over HTTP against `runledger serve`: a deadline per run or per tenant, listed, and force-failed."""
from datetime import datetime, timedelta

from infra.entry.client import LedgerClient
from schemas.envelope import iso, parse_iso
from tests.support import events, token, unique, wait_until


def bearer(tenant: str, *roles: str) -> dict:
    return {"Authorization": f"Bearer {token(tenant, 'oncall', roles or ('operator',))}"}


async def test_a_run_past_its_deadline_is_listed_as_stuck_and_an_operator_may_force_fail_it(http):
    tenant = unique("stuck-")
    operator = LedgerClient(http, token(tenant))
    due_now = await operator.send({"type": "RequestRun", "agent_id": "bot", "deadline_s": 1})
    due_later = await operator.send({"type": "RequestRun", "agent_id": "bot", "deadline_s": 3600})
    assert due_now.accepted and due_later.accepted
    # Given a run an hour from its deadline, an operator may not force-fail it (an admin may)
    early = await operator.send({"type": "ForceFailRun", "run_id": due_later.id, "reason": "looks hung"})
    assert (early.status_code, early.body["code"]) == (409, "not_stuck")

    # When the other's deadline passes, it is listed as stuck, as of each request's now
    async def listed():
        page = await http.get("/v1/runs", params={"stuck": "true"}, headers=bearer(tenant))
        return page.json()["items"] if page.json()["items"] else None
    stuck = await wait_until(listed, 30, "the 1 s run to be stuck")
    assert [(r["run_id"], r["stuck"], r["overdue_s"] > 0) for r in stuck] == [(due_now.id, True, True)]
    shown = (await http.get(f"/v1/runs/{due_later.id}", headers=bearer(tenant))).json()
    assert (shown["stuck"], shown["overdue_s"], shown["state"]) == (False, None, "requested")

    # Then an operator force-fails it, and it is no longer stuck but failed
    failed = await operator.send({"type": "ForceFailRun", "run_id": due_now.id, "reason": "hung past its deadline"})
    assert failed.accepted, failed.body
    seq = failed.body["events"][-1]["chain_seq"]
    after = await http.get("/v1/runs", params={"stuck": "true", "min_seq": seq}, headers=bearer(tenant))
    assert after.json()["items"] == []
    run = (await http.get(f"/v1/runs/{due_now.id}", headers=bearer(tenant))).json()
    assert (run["state"], run["stuck"], run["overdue_s"]) == ("failed", False, None)


async def test_the_tenant_default_deadline_is_recorded_on_each_new_run(api, http):
    tenant = unique("deadline-")
    refused = await LedgerClient(http, token(tenant)).send({"type": "SetRunDeadline", "deadline_s": 600})
    assert (refused.status_code, refused.body["code"]) == (403, "missing_role")
    admin = LedgerClient(http, token(tenant, "root", ("admin",)))
    assert (await admin.send({"type": "SetRunDeadline", "deadline_s": 600})).accepted
    run = await admin.send({"type": "RequestRun", "agent_id": "bot"})
    assert run.accepted
    requested = next(e for e in await events(api.settings) if e["aggregate_id"] == run.id)
    assert requested["payload"]["deadline_at"] == iso(parse_iso(requested["recorded_at"]) + timedelta(seconds=600))
    shown = (await http.get(f"/v1/runs/{run.id}", params={"min_seq": requested["chain_seq"]},
                            headers=bearer(tenant))).json()
    assert (datetime.fromisoformat(shown["deadline_at"]), shown["stuck"]) == \
        (parse_iso(requested["payload"]["deadline_at"]), False)
