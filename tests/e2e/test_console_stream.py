"""The multiplexed stream over real HTTP (GET /v1/streams/multiplex): several channels on one connection,
exact resumption from any message's id while events arrive, isolation and roles per channel."""
import asyncio
import random
import uuid

import httpx

from infra.entry.client import LedgerClient
from tests.sse_client import messages
from tests.support import token, unique

PATH = "/v1/streams/multiplex"


def bearer(tenant: str, *roles: str, subject: str = "watcher") -> dict:
    return {"Authorization": f"Bearer {token(tenant, subject, roles or ('operator',))}"}


async def send(http, tenant: str, body: dict, *roles: str, subject: str = "agent") -> dict:
    outcome = await LedgerClient(http, token(tenant, subject, roles or ("operator",))).send(body)
    assert outcome.accepted, outcome.body
    return outcome.body


async def read(api, channels: list[str], headers: dict, until, params: dict | None = None) -> list:
    """Messages of one connection (events, subscribed, notices) until `until(messages)` holds."""
    got = []
    async with httpx.AsyncClient(base_url=api.url, timeout=30) as http:
        async with http.stream("GET", PATH, headers=headers, params={"channel": channels, **(params or {})}) as response:
            assert response.status_code == 200, await response.aread()
            async for message in messages(response):
                if message.event != "message":
                    got.append(message)
                if until(got):
                    break
    return got


async def run_with_approvals(http, tenant: str, approvals: int) -> tuple[str, int]:
    run = (await send(http, tenant, {"type": "RequestRun", "agent_id": "a"}))["aggregate_id"]
    await send(http, tenant, {"type": "StartRun", "run_id": run})
    last = 0
    for i in range(approvals):
        body = await send(http, tenant, {"type": "RequestApproval", "run_id": run, "action": f"act-{i}",
                                         "risk_tier": "low"})
        last = body["events"][-1]["chain_seq"]
    return run, last


async def test_one_connection_resumed_at_random_points_gives_each_channel_once_in_order(api, http):
    # Given a run that gets steps, and another whose approvals are requested and granted, while a client follows
    tenant = unique("tenant-")
    stepping = (await send(http, tenant, {"type": "RequestRun", "agent_id": "a"}))["aggregate_id"]
    await send(http, tenant, {"type": "StartRun", "run_id": stepping})
    waiting = (await send(http, tenant, {"type": "RequestRun", "agent_id": "b"}))["aggregate_id"]
    await send(http, tenant, {"type": "StartRun", "run_id": waiting})
    channels = ["approvals", f"runs/{stepping}"]
    produced = {"approvals": 0, f"runs/{stepping}": 2}  # each channel's events so far, from the outcomes
    more = asyncio.Event()

    async def produce():
        try:
            for i in range(60):
                if i % 3 == 0:
                    body = await send(http, tenant, {"type": "RequestApproval", "run_id": waiting, "action": f"a{i}",
                                                     "risk_tier": "low"})
                    produced["approvals"] += 1
                    body = await send(http, tenant, {"type": "GrantApproval", "approval_id": body["aggregate_id"]},
                                      "approver", subject="ann")
                    produced["approvals"] += sum(e["type"].startswith("approval.") for e in body["events"])
                else:
                    await send(http, tenant, {"type": "StartStep", "run_id": stepping, "kind": "tool", "name": f"s{i}"})
                    produced[f"runs/{stepping}"] += 1
                more.set()
        finally:  # wakes the reader when it ends, a failure included
            more.set()
    producer = asyncio.create_task(produce())
    # When it reads both on one connection, cut after a random number of events, and resumes with the last id seen
    rng, last, received, connections = random.Random(13), "0.0", [], 0
    while True:
        available = sum(produced.values()) - len(received)
        if not available:
            if producer.done():
                await producer  # a command it sent that was not accepted is this test's failure, not a hang
                break
            more.clear()
            await more.wait()
            continue
        cut = min(rng.randint(1, 9), available)
        got = await asyncio.wait_for(read(api, channels, {**bearer(tenant), "Last-Event-ID": last},  # pings keep
                                          lambda ms: sum(m.event in channels for m in ms) >= cut), 60)  # it open
        assert got[0].event == "subscribed" and got[0].id == last
        events = [m for m in got if m.event in channels]
        received += [(m.event, m.id, m.json["chain_seq"], m.json["type"]) for m in events]
        last = events[-1].id
        connections += 1
    await producer
    # Then each channel's positions are 1, 2, 3 … once each, its events in chain order, and none is missing
    assert connections >= 10
    for i, name in enumerate(channels):
        mine = [(int(position.split(".")[i]), seq) for channel, position, seq, _ in received if channel == name]
        assert [p for p, _ in mine] == list(range(1, produced[name] + 1)), name
        assert [s for _, s in mine] == sorted(s for _, s in mine), name
    whole = await read(api, channels, {**bearer(tenant), "Last-Event-ID": "0.0"},
                       lambda ms: sum(m.event in channels for m in ms) >= len(received))
    for name in channels:  # a fresh replay of the whole channel holds exactly what the resumed reads did
        assert [(seq, t) for c, _, seq, t in received if c == name] == [
            (m.json["chain_seq"], m.json["type"]) for m in whole if m.event == name], name
    assert {t for c, _, _, t in received if c == "approvals"} == {"approval.requested", "approval.vote_recorded",
                                                                  "approval.granted"}


async def test_subscribed_says_where_each_channel_starts_and_up_to_which_chain_seq(api, http):
    tenant = unique("tenant-")
    run, seq = await run_with_approvals(http, tenant, 3)
    got = await read(api, ["tenant", "approvals", f"runs/{run}"], bearer(tenant), lambda ms: bool(ms),
                     {"min_seq": seq})
    assert (got[0].event, got[0].id) == ("subscribed", f"{seq}.3.{seq}")
    assert got[0].json == {"channels": ["tenant", "approvals", f"runs/{run}"],
                           "positions": {"tenant": seq, "approvals": 3, f"runs/{run}": seq}, "chain_seq": seq}
    # a position the channel never issued is said, per channel, and the stream resumes from its head
    ahead = await read(api, ["approvals", f"runs/{run}"], {**bearer(tenant), "Last-Event-ID": f"9.{seq}"},
                       lambda ms: len(ms) >= 2)
    assert (ahead[1].event, ahead[1].json) == ("replay_incomplete", {
        "channel": "approvals", "reason": "unknown_id", "requested_after": 9, "resumes_after": 3})


async def test_another_tenants_run_answers_like_one_that_does_not_exist_and_nothing_of_it_is_sent(api, http):
    # Given tenant B with a run and an approval, and tenant A with one approval
    mine, theirs = unique("tenant-"), unique("tenant-")
    _, my_seq = await run_with_approvals(http, mine, 1)
    their_run, their_seq = await run_with_approvals(http, theirs, 2)
    # When A asks for B's run, and for a run nobody has
    nobodys = str(uuid.uuid4())
    asked_theirs = await http.get(PATH, params={"channel": ["approvals", f"runs/{their_run}"]},
                                  headers=bearer(mine, "operator", "admin", "approver", "auditor"))
    asked_nobodys = await http.get(PATH, params={"channel": ["approvals", f"runs/{nobodys}"]},
                                   headers=bearer(mine, "operator", "admin", "approver", "auditor"))
    # Then both are the same 404, naming only the id asked for
    assert asked_theirs.status_code == asked_nobodys.status_code == 404
    assert asked_theirs.text.replace(their_run, "ID") == asked_nobodys.text.replace(nobodys, "ID")
    assert asked_theirs.json()["details"] == {"channel": f"runs/{their_run}"}
    assert theirs not in asked_theirs.text
    # And A's approvals channel, replayed from its start, holds A's approval alone
    got = await read(api, ["approvals", "tenant"], {**bearer(mine, "auditor"), "Last-Event-ID": "0.0"},
                     lambda ms: sum(m.event in ("approvals", "tenant") for m in ms) >= 1 + my_seq, {"min_seq": my_seq})
    assert {m.json["tenant_id"] for m in got if m.event in ("approvals", "tenant")} == {mine}
    assert [m.json["type"] for m in got if m.event == "approvals"] == ["approval.requested"]
    assert all(their_run not in m.data for m in got)


async def test_each_channel_needs_the_roles_of_its_own_stream(api, http):
    tenant = unique("tenant-")
    run, seq = await run_with_approvals(http, tenant, 1)
    params = {"min_seq": seq, "wait_ms": 5000}
    for roles, channels, status in ((("approver",), ["approvals"], 200),
                                    (("approver",), ["approvals", f"runs/{run}"], 403),
                                    (("approver",), ["tenant"], 403),
                                    (("auditor",), ["tenant", "approvals", f"runs/{run}"], 200),
                                    (("policy",), ["approvals"], 403)):
        async with httpx.AsyncClient(base_url=api.url, timeout=30) as client:
            async with client.stream("GET", PATH, params={"channel": channels, **params},
                                     headers=bearer(tenant, *roles)) as response:
                body = (await response.aread()).decode() if response.status_code != 200 else ""
        assert response.status_code == status, (roles, channels, body)
        if status == 403:
            assert '"code":"missing_role"' in body and '"channel":' in body
    refused = {
        "no channel": (await http.get(PATH, headers=bearer(tenant))),
        "unknown channel": await http.get(PATH, params={"channel": "audit"}, headers=bearer(tenant)),
        "twice": await http.get(PATH, params={"channel": ["tenant", "tenant"]}, headers=bearer(tenant)),
        "not a run": await http.get(PATH, params={"channel": "runs/42"}, headers=bearer(tenant)),
        "positions": await http.get(PATH, params={"channel": ["tenant", "approvals"]},
                                    headers={**bearer(tenant), "Last-Event-ID": "3"}),
        "no token": await http.get(PATH, params={"channel": "tenant"}),
    }
    assert {why: (r.status_code, r.json()["code"]) for why, r in refused.items()} == {
        "no channel": (422, "invalid_request"), "unknown channel": (400, "invalid_channel"),
        "twice": (400, "invalid_channel"), "not a run": (400, "invalid_channel"),
        "positions": (400, "invalid_last_event_id"), "no token": (401, "missing_token")}
