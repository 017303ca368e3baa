"""Hostile input over real HTTP: a specific 4xx, never a 500, and nothing reaches the log."""
import asyncio
import base64
import json
import time
import uuid

import jwt
import pytest

from infra.entry.client import LedgerClient
from tests.support import SECRET, end_offsets, token, unique

NESTED = b"[" * 40 + b"]" * 40
HOSTILE_BODIES = [  # label, body (RUN is replaced by a run of the tenant), status, code, named in the reason
    ("NUL in free text", b'{"type":"FailRun","run_id":"RUN","error":"boom\\u0000"}', 422, "invalid_text", "error: "),
    ("lone surrogate in a label key", b'{"type":"RequestRun","agent_id":"a","labels":{"k\\ud800":"v"}}',
     422, "invalid_text", "labels.k\\ud800: "),
    ("control character in a label", b'{"type":"RequestRun","agent_id":"a","labels":{"env":"\\u0007"}}',
     422, "invalid_text", "labels.env: "),
    ("repeated key", b'{"type":"StartRun","run_id":"RUN","type":"ForceFailRun","reason":"x"}',
     400, "duplicate_key", "'type'"),
    ("NaN", b'{"type":"RecordCost","provider":"p","model":"m","amount_micros":NaN,"currency":"USD"}',
     400, "malformed_json", "NaN"),
    ("-Infinity", b'{"type":"RequestRun","agent_id":"a","budget_micros":-Infinity}', 400, "malformed_json", "Infinity"),
    ("deep nesting", b'{"type":"RequestRun","agent_id":"a","labels":' + NESTED + b"}", 400, "too_deeply_nested", "32"),
    ("far deeper nesting", b"[" * 30000 + b"]" * 30000, 400, "too_deeply_nested", "32"),
    ("type is a list", b'{"type":["RequestRun"],"agent_id":"a"}', 422, "invalid_command", "type"),
    ("expected_version 2**64", b'{"type":"StartRun","run_id":"RUN","expected_version":18446744073709551616}',
     422, "invalid_command", "expected_version"),
    ("amount_micros true", b'{"type":"RecordCost","provider":"p","model":"m","amount_micros":true,"currency":"USD"}',
     422, "invalid_command", "amount_micros"),
    ("amount_micros 1.0", b'{"type":"RecordCost","provider":"p","model":"m","amount_micros":1.0,"currency":"USD"}',
     422, "invalid_command", "amount_micros"),
    ("tokens_in as a string", b'{"type":"RecordCost","provider":"p","model":"m","amount_micros":1,"tokens_in":"1",'
                              b'"currency":"USD"}', 422, "invalid_command", "tokens_in"),
    ("required_approvals true", b'{"type":"RequestApproval","run_id":"RUN","action":"a","risk_tier":"low",'
                                b'"required_approvals":true}', 422, "invalid_command", "required_approvals"),
    ("expires_in_seconds 60.0", b'{"type":"RequestApproval","run_id":"RUN","action":"a","risk_tier":"low",'
                                b'"expires_in_seconds":60.0}', 422, "invalid_command", "expires_in_seconds"),
    ("agent_id true", b'{"type":"RequestRun","agent_id":true}', 422, "invalid_command", "agent_id"),
]


def claims(tenant: str, **changes) -> dict:
    now = int(time.time())
    return {"sub": "agent", "tenant_id": tenant, "roles": ["operator"], "aud": "runledger", "iat": now,
            "exp": now + 600, **changes}


HOSTILE_TOKENS = [  # label, claims changed, named in the reason
    ("roles nested in a list", {"roles": [["admin"]]}, "roles"),
    ("exp as a string", {"exp": "9999999999"}, "exp"),
    ("exp as a bool", {"exp": True}, "exp"),
    ("iat as a string", {"iat": "1"}, "iat"),
    ("tenant with a trailing newline", {"tenant_id": "TENANT\n"}, "tenant_id"),
    ("subject with a trailing newline", {"sub": "agent\n"}, "sub"),
    ("subject with NUL", {"sub": "a\x00"}, "sub"),
]


@pytest.fixture
def tenant() -> str:
    return unique("tenant-")


def bearer(tenant: str, *roles: str) -> dict:
    return {"Authorization": f"Bearer {token(tenant, 'agent', roles or ('operator',))}"}


async def log_position(api) -> tuple[dict, dict]:
    s = api.settings
    return await end_offsets(s, s.commands_topic), await end_offsets(s, s.events_topic)


async def a_run(http, tenant: str) -> dict:
    outcome = await LedgerClient(http, token(tenant)).send({"type": "RequestRun", "agent_id": "a"})
    assert outcome.accepted, outcome.body
    return outcome.body


async def post(http, tenant: str, raw: bytes, run_id: str):
    return await http.post("/v1/commands", content=raw.replace(b"RUN", run_id.encode()),
                           headers={**bearer(tenant, "operator", "admin"), "Content-Type": "application/json"})


@pytest.mark.parametrize("label,raw,status,code,named", HOSTILE_BODIES, ids=[b[0] for b in HOSTILE_BODIES])
async def test_a_hostile_body_gets_a_specific_4xx_and_reaches_no_topic(api, http, tenant, label, raw, status, code,
                                                                        named):
    run_id = (await a_run(http, tenant))["aggregate_id"]
    before = await log_position(api)
    response = await post(http, tenant, raw, run_id)
    assert (response.status_code, response.json()["code"]) == (status, code), response.text
    assert named in response.json()["reason"]
    assert await log_position(api) == before


async def test_after_a_batch_of_refusals_the_chain_continues_with_the_next_seq(api, http, tenant):
    first = await a_run(http, tenant)
    for label, raw, status, _, _ in HOSTILE_BODIES:
        assert (await post(http, tenant, raw, first["aggregate_id"])).status_code == status, label
    following = await LedgerClient(http, token(tenant)).send({"type": "StartRun", "run_id": first["aggregate_id"]})
    assert following.accepted, following.body
    assert following.body["events"][0]["chain_seq"] == first["events"][-1]["chain_seq"] + 1


@pytest.mark.parametrize("label,changes,named", HOSTILE_TOKENS, ids=[t[0] for t in HOSTILE_TOKENS])
async def test_a_hostile_token_is_an_invalid_token_naming_the_claim(api, http, tenant, label, changes, named):
    changes = {k: (v.replace("TENANT", tenant) if isinstance(v, str) else v) for k, v in changes.items()}
    forged = jwt.encode(claims(tenant, **changes), SECRET, algorithm="HS256")
    before = await log_position(api)
    response = await http.post("/v1/commands", json={"type": "RequestRun", "agent_id": "a"},
                               headers={"Authorization": f"Bearer {forged}"})
    assert (response.status_code, response.json()["code"]) == (401, "invalid_token"), response.text
    assert named in response.json()["reason"]
    assert await log_position(api) == before


async def test_a_content_length_that_is_not_ascii_digits_is_a_4xx(api):
    host, port = api.url.removeprefix("http://").split(":")
    for declared in ("\u00b2".encode("latin-1"), b"9" * 5000):
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(b"POST /v1/commands HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                     + token(unique("tenant-")).encode() + b"\r\nContent-Length: " + declared
                     + b"\r\nConnection: close\r\n\r\n{}")
        await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), 30)
        writer.close()
        assert status_line.split()[1] in (b"400", b"413"), status_line


GUARDED = [  # path, params, roles, the parameter named
    ("/v1/runs", {"agent_id": "\x00"}, ("operator",), "agent_id"),
    ("/v1/runs", {"state": "running", "cursor": "a\x00"}, ("operator",), "cursor"),
    ("/v1/audit/events", {"actor": "\x00"}, ("auditor",), "actor"),
    ("/v1/audit/events", {"type": "run.requested\x1f"}, ("auditor",), "type"),
    ("/v1/approvals/pending", {"required_role": "\x00"}, ("approver",), "required_role"),
    ("/v1/streams/runs/%00", {}, ("operator",), "run_id"),
    ("/v1/streams/tenant", {"last_event_id": "\x00"}, ("operator",), "last_event_id"),
    ("/v1/runs/" + str(uuid.uuid4()), {"x\x00": "1"}, ("operator",), "x\\u0000"),
]


@pytest.mark.parametrize("path,params,roles,named", GUARDED, ids=[f"{g[0]}?{list(g[1])}" for g in GUARDED])
async def test_unstorable_parameters_are_refused_naming_them(http, tenant, path, params, roles, named):
    response = await http.get(path, params=params, headers=bearer(tenant, *roles))
    assert (response.status_code, response.json()["code"]) == (400, "invalid_parameter"), response.text
    assert response.json()["details"][0]["field"] == named and response.json()["reason"].startswith(f"{named}: ")


def forged_cursor(values) -> str:
    return base64.urlsafe_b64encode(json.dumps(values).encode()).decode().rstrip("=")


CURSORS = [
    ("/v1/runs", ["x", "y"], ("operator",)), ("/v1/runs", [1, {}], ("operator",)),
    ("/v1/runs", [None, None], ("operator",)), ("/v1/approvals/pending", ["x", "y"], ("approver",)),
    ("/v1/approvals/pending", ["2024-01-01T00:00:00+00:00", "x"], ("approver",)),
    ("/v1/audit/events", ["x"], ("auditor",)), ("/v1/audit/events", [2**64], ("auditor",)),
    ("/v1/audit/events", [True], ("auditor",)),
]


@pytest.mark.parametrize("path,values,roles", CURSORS, ids=[f"{c[0]}:{c[1]}" for c in CURSORS])
async def test_a_forged_cursor_of_the_wrong_shape_is_an_invalid_cursor(http, tenant, path, values, roles):
    response = await http.get(path, params={"cursor": forged_cursor(values)}, headers=bearer(tenant, *roles))
    assert (response.status_code, response.json()["code"]) == (400, "invalid_cursor"), response.text


INSTANTS = [
    ("/v1/runs", "until", "0.5", ("operator",)), ("/v1/runs", "since", "0", ("operator",)),
    ("/v1/runs", "since", "0001-01-01T00:00:00Z", ("operator",)),
    ("/v1/audit/events", "since", "0001-01-01T00:00:00Z", ("auditor",)),
    ("/v1/audit/events", "until", "2300-01-01T00:00:00Z", ("auditor",)),
    ("/v1/audit/events", "since", "0", ("auditor",)),
    ("/v1/costs/rollup", "since", "0001-01-01T00:00:00Z", ("auditor",)),
    ("/v1/costs/rollup", "until", "1e3", ("auditor",)),
]


@pytest.mark.parametrize("path,name,value,roles", INSTANTS, ids=[f"{i[0]}?{i[1]}={i[2]}" for i in INSTANTS])
async def test_a_time_filter_that_is_a_number_or_out_of_range_is_refused_naming_it(http, tenant, path, name, value,
                                                                                    roles):
    response = await http.get(path, params={name: value}, headers=bearer(tenant, *roles))
    assert (response.status_code, response.json()["code"]) == (422, "invalid_request"), response.text
    assert response.json()["details"][0]["field"] == f"query.{name}"


async def test_a_time_filter_in_range_still_filters(http, tenant):
    await a_run(http, tenant)
    response = await http.get("/v1/audit/events", params={"since": "2299-12-31T00:00:00Z"},
                              headers=bearer(tenant, "auditor"))
    assert (response.status_code, response.json()["items"]) == (200, [])


@pytest.mark.parametrize("header,query", [("\u00b2", None), (None, "\u00b2"), (None, "9" * 5000), ("-1", None),
                                          (None, " 1"), ("1" * 19, None)])
async def test_a_last_event_id_that_is_not_a_channel_position_is_refused(http, tenant, header, query):
    sent = {"Last-Event-ID": header.encode("latin-1")} if header is not None else {}  # as a server reads bytes
    headers = {**bearer(tenant, "operator"), **sent}
    response = await http.get("/v1/streams/tenant", headers=headers,
                              params={"last_event_id": query} if query is not None else {})
    assert (response.status_code, response.json()["code"]) == (400, "invalid_last_event_id"), response.text


async def test_a_run_stream_id_that_is_not_a_uuid_is_a_422_and_another_tenants_run_a_404(http, tenant):
    not_an_id = await http.get("/v1/streams/runs/not-a-run", headers=bearer(tenant))
    assert (not_an_id.status_code, not_an_id.json()["details"][0]["field"]) == (422, "path.run_id")
    theirs_id, unknown = (await a_run(http, unique("tenant-")))["aggregate_id"], str(uuid.uuid4())
    theirs = await http.get(f"/v1/streams/runs/{theirs_id}", headers=bearer(tenant))
    nobodys = await http.get(f"/v1/streams/runs/{unknown}", headers=bearer(tenant))
    assert theirs.status_code == nobodys.status_code == 404
    assert theirs.text.replace(theirs_id, "ID") == nobodys.text.replace(unknown, "ID")
