"""The command API over HTTP against a running `runledger serve` (API + processor) on the real broker."""
import base64
import json
import re
import time
import uuid

import pytest

from commands.intake import CLIENT_TYPES
from infra.adapters.http.auth import mint
from infra.entry.client import LedgerClient
from tests.support import SECRET, end_offsets, token, unique


@pytest.fixture
def tenant() -> str:
    return unique("tenant-")


def client(http, tenant: str, subject: str = "agent", *roles: str) -> LedgerClient:
    return LedgerClient(http, token(tenant, subject, roles or ("operator",)))


async def log_position(api) -> tuple[dict, dict]:
    s = api.settings
    return await end_offsets(s, s.commands_topic), await end_offsets(s, s.events_topic)


async def running_run(agent: LedgerClient) -> str:
    run = await agent.send({"type": "RequestRun", "agent_id": "a"})
    assert run.accepted, run.body
    assert (await agent.send({"type": "StartRun", "run_id": run.id})).accepted
    return run.id


async def test_an_accepted_command_returns_its_chain_positions_and_hashes(http, tenant):
    agent = client(http, tenant)
    first = await agent.send({"type": "RequestRun", "agent_id": "a", "project": "p"})
    second = await agent.send({"type": "StartRun", "run_id": first.id})
    assert (first.status_code, first.body["status"]) == (200, "accepted")
    assert [e["chain_seq"] for e in first.body["events"] + second.body["events"]] == [1, 2]
    assert all(len(e["hash"]) == 64 for e in first.body["events"])
    assert second.body["aggregate_version"] == 2


async def test_a_retried_command_returns_the_first_outcome_and_appends_nothing(api, http, tenant):
    agent = client(http, tenant)
    body = {"type": "RequestRun", "agent_id": "a"}
    first = await agent.send(body, idempotency_key="retry-me")
    _, events_before = await log_position(api)
    again = await agent.send(body, idempotency_key="retry-me")
    _, events_after = await log_position(api)
    assert (again.status_code, again.replayed, again.body["events"]) == (200, True, first.body["events"])
    assert again.body["aggregate_id"] == first.id and events_after == events_before
    different = await agent.send({**body, "agent_id": "b"}, idempotency_key="retry-me")
    assert (different.status_code, different.body["code"]) == (422, "idempotency_key_reused")


async def test_a_stale_expected_version_is_a_409(http, tenant):
    agent = client(http, tenant)
    run_id = await running_run(agent)
    stale = await agent.send({"type": "CancelRun", "run_id": run_id, "reason": "x"}, expected_version=1)
    assert (stale.status_code, stale.body["code"]) == (409, "version_conflict")
    fresh = await agent.send({"type": "CancelRun", "run_id": run_id, "reason": "x"}, expected_version=2)
    assert (fresh.status_code, fresh.body["status"], fresh.body["aggregate_version"],
            [e["type"] for e in fresh.body["events"]]) == (200, "accepted", 3, ["run.cancelled"])


def b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


ALG_NONE = b64({"alg": "none", "typ": "JWT"}) + "." + b64(
    {"sub": "x", "tenant_id": "t", "roles": ["admin"], "aud": "runledger", "exp": int(time.time()) + 3600}) + "."

UNKNOWN_TYPE = re.escape(f"unknown command type 'DeleteEverything'; known types: {', '.join(CLIENT_TYPES)}")
# label, request, bearer, status, code, and the reason (a pattern the whole reason must match)
BAD_REQUESTS = [
    ("malformed json", {"content": b'{"type": "RequestRun", '}, None, 400, "malformed_json",
     r"the body is not valid JSON: Expecting property name enclosed in double quotes: line 1 column 24 \(char 23\)"),
    ("not an object", {"json": ["RequestRun"]}, None, 422, "invalid_command",
     r"the body must be a JSON object with a 'type'"),
    ("unknown type", {"json": {"type": "DeleteEverything"}}, None, 422, "unknown_command_type", UNKNOWN_TYPE),
    ("wrong type", {"json": {"type": "RequestRun", "agent_id": ["a"]}}, None, 422, "invalid_command",
     r"invalid RequestRun: agent_id: Input should be a valid string"),
    ("missing field", {"json": {"type": "StartRun"}}, None, 422, "invalid_command",
     r"invalid StartRun: run_id: Field required"),
    ("unknown field", {"json": {"type": "RequestRun", "agent_id": "a", "tenant_id": "other"}}, None, 422,
     "invalid_command", r"invalid RequestRun: tenant_id: Extra inputs are not permitted"),
    ("system command", {"json": {"type": "ExpireApproval", "approval_id": str(uuid.uuid4())}}, None, 403,
     "system_command", r"ExpireApproval is issued by runledger itself, not by clients"),
    ("oversized body", {"json": {"type": "RequestRun", "agent_id": "a", "labels": {"k": "v" * 70000}}}, None, 413,
     "body_too_large", r"the body is 700[0-9]{2} bytes; the limit is 65536"),
    ("missing token", {"json": {"type": "RequestRun", "agent_id": "a"}}, "", 401, "missing_token",
     r"send 'Authorization: Bearer <token>'"),
    ("alg none", {"json": {"type": "RequestRun", "agent_id": "a"}}, ALG_NONE, 401, "invalid_token",
     r"the token's algorithm is not accepted \(HS256 only\)"),
    ("wrong key", {"json": {"type": "RequestRun", "agent_id": "a"}}, "wrong-key", 401, "invalid_token",
     r"the token's signature does not verify"),
    ("expired", {"json": {"type": "RequestRun", "agent_id": "a"}}, "expired", 401, "token_expired",
     r"the bearer token has expired"),
    ("garbage token", {"json": {"type": "RequestRun", "agent_id": "a"}}, "abc.def.ghi", 401, "invalid_token",
     r"the token cannot be read: Invalid header string: .+"),
    ("wrong role", {"json": {"type": "SetBudget", "project": "p", "period": "day", "limit_micros": 1,
                             "currency": "USD"}}, None, 403, "missing_role",
     r"SetBudget needs one of the roles \['admin'\]"),
]


@pytest.mark.parametrize("label,request_kwargs,bearer,status,code,reason", BAD_REQUESTS, ids=[b[0] for b in BAD_REQUESTS])
async def test_bad_requests_get_a_specific_4xx_and_the_log_does_not_move(api, http, tenant, label, request_kwargs,
                                                                          bearer, status, code, reason):
    if bearer is None:
        bearer = token(tenant)
    elif bearer == "wrong-key":
        bearer = mint("k" * 48, tenant, "agent", ["operator"])
    elif bearer == "expired":
        bearer = mint(SECRET, tenant, "agent", ["operator"], ttl_s=-5)
    headers = {"Authorization": f"Bearer {bearer}"} if bearer else {}
    before = await log_position(api)
    response = await http.post("/v1/commands", headers=headers, **request_kwargs)
    assert (response.status_code, response.json()["code"]) == (status, code), response.text
    assert re.fullmatch(reason, response.json()["reason"]), response.json()["reason"]
    assert await log_position(api) == before


@pytest.mark.parametrize("body,status,code", [
    ({"type": "StartRun", "run_id": str(uuid.uuid4())}, 404, "not_found"),
    ({"type": "CompleteRun", "run_id": "RUN"}, 409, "invalid_state"),
])
async def test_domain_rejections_append_no_event(api, http, tenant, body, status, code):
    agent = client(http, tenant)
    run = await agent.send({"type": "RequestRun", "agent_id": "a"})
    body = {k: (run.id if v == "RUN" else v) for k, v in body.items()}
    _, events_before = await log_position(api)
    outcome = await agent.send(body)
    _, events_after = await log_position(api)
    assert (outcome.status_code, outcome.body["code"], outcome.body["status"]) == (status, code, "rejected")
    assert events_after == events_before


async def test_a_tenant_cannot_touch_another_tenants_run(api, http, tenant):
    owner = client(http, tenant)
    run_id = await running_run(owner)
    intruder = client(http, unique("tenant-"), "agent", "operator", "admin")
    _, events_before = await log_position(api)
    for body in ({"type": "CancelRun", "run_id": run_id, "reason": "mine now"},
                 {"type": "ForceFailRun", "run_id": run_id, "reason": "x"},
                 {"type": "RecordCost", "run_id": run_id, "provider": "p", "model": "m",
                  "amount_micros": 1, "currency": "USD"}):
        outcome = await intruder.send(body)
        assert (outcome.status_code, outcome.body["code"]) == (404, "not_found")
        assert tenant not in json.dumps(outcome.body)
    _, events_after = await log_position(api)
    assert events_after == events_before
    completed = await owner.send({"type": "CompleteRun", "run_id": run_id})
    assert (completed.status_code, completed.body["status"], [e["type"] for e in completed.body["events"]]) == \
        (200, "accepted", ["run.succeeded"])


async def test_approvals_enforce_requester_role_and_two_persons(http, tenant):
    agent = client(http, tenant, "agent", "operator", "approver")
    run_id = await running_run(agent)
    approval = await agent.send({"type": "RequestApproval", "run_id": run_id, "action": "wire money",
                                 "risk_tier": "critical", "required_approvals": 2})
    grant = {"type": "GrantApproval", "approval_id": approval.id}
    own = await agent.send(grant)
    assert (own.status_code, own.body["code"]) == (403, "requester_cannot_approve")
    operator_only = await client(http, tenant, "ops").send(grant)
    assert (operator_only.status_code, operator_only.body["code"]) == (403, "missing_role")
    ann, bob = client(http, tenant, "ann", "approver"), client(http, tenant, "bob", "approver")
    assert [e["type"] for e in (await ann.send(grant)).body["events"]] == ["approval.vote_recorded"]
    twice = await ann.send(grant)
    assert (twice.status_code, twice.body["code"]) == (409, "already_approved")
    final = await bob.send(grant)
    assert [e["type"] for e in final.body["events"]] == ["approval.vote_recorded", "approval.granted",
                                                         "run.approval_resolved"]


async def test_over_budget_is_refused(http, tenant):
    admin, agent = client(http, tenant, "root", "admin"), client(http, tenant)
    assert (await admin.send({"type": "SetBudget", "project": "p", "period": "day",
                              "limit_micros": 100, "currency": "USD"})).accepted
    run = await agent.send({"type": "RequestRun", "agent_id": "a", "project": "p"})
    cost = {"type": "RecordCost", "run_id": run.id, "provider": "p", "model": "m",
            "amount_micros": 101, "currency": "USD"}
    refused = await agent.send(cost)
    assert (refused.status_code, refused.body["code"]) == (409, "budget_exceeded")
    at_limit = await agent.send({**cost, "amount_micros": 100})
    assert (at_limit.status_code, at_limit.body["status"], [e["type"] for e in at_limit.body["events"]]) == \
        (200, "accepted", ["budget.cost_recorded"])
    again = await agent.send({"type": "RequestRun", "agent_id": "b", "project": "p"})
    assert (again.status_code, again.body["code"]) == (409, "budget_exceeded")


async def test_health_and_openapi(http):
    health = (await http.get("/healthz")).json()
    assert (health["api"], health["processor"]) == ("ok", "ok")
    spec = (await http.get("/openapi.json")).json()
    assert "RequestApproval" in spec["components"]["schemas"]
    assert "/v1/commands" in spec["paths"]


async def test_the_callers_trace_continues_into_the_appended_events(api, http, tenant):
    from tests.support import events
    trace_id = uuid.uuid4().hex
    response = await http.post("/v1/commands", json={"type": "RequestRun", "agent_id": "traced"},
                               headers={"Authorization": f"Bearer {token(tenant)}",
                                        "traceparent": f"00-{trace_id}-{'1' * 16}-01"})
    untraced = await client(http, tenant).send({"type": "RequestRun", "agent_id": "plain"})
    assert response.status_code == 200 and untraced.accepted
    mine = {e["event_id"]: e for e in await events(api.settings) if e["tenant_id"] == tenant}
    traced_env = mine[response.json()["events"][0]["event_id"]]
    plain_env = mine[untraced.body["events"][0]["event_id"]]
    version, trace, span, flags = traced_env["traceparent"].split("-")
    assert (version, trace, flags) == ("00", trace_id, "01") and span != "1" * 16
    assert plain_env["traceparent"].split("-")[1] not in (trace_id, "0" * 32)
