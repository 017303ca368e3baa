"""SSE streams over real HTTP: replay, live tail, reconnect with Last-Event-ID, limits, isolation."""
import asyncio
import random

import httpx

from infra.entry.client import LedgerClient
from schemas.envelope import GENESIS_HASH, compute_hash
from tests.sse_client import messages
from tests.support import token, unique


def bearer(tenant: str, *roles: str) -> dict:
    return {"Authorization": f"Bearer {token(tenant, 'watcher', roles or ('operator',))}"}


async def send(http, tenant: str, body: dict) -> dict:
    outcome = await LedgerClient(http, token(tenant)).send(body)
    assert outcome.accepted, outcome.body
    return outcome.body


async def collect(api, path: str, headers: dict, want: int, params: dict | None = None, timeout: float = 30):
    """Read a stream until `want` events arrived (notices included); return the messages."""
    got = []
    async with httpx.AsyncClient(base_url=api.url, timeout=timeout) as http:
        async with http.stream("GET", path, headers=headers, params=params or {}) as response:
            assert response.status_code == 200, await response.aread()
            async for message in messages(response):
                if message.id is not None or message.event in ("replay_incomplete", "overflow"):
                    got.append(message)
                if len(got) >= want:
                    break
    return got


async def test_replay_then_live_tail_with_ids_types_and_envelopes(api, http):
    tenant = unique("tenant-")
    first = await send(http, tenant, {"type": "RequestRun", "agent_id": "a"})
    run_id, seq = first["aggregate_id"], first["events"][-1]["chain_seq"]
    stream = asyncio.create_task(collect(api, f"/v1/streams/runs/{run_id}", bearer(tenant), 3,
                                         {"last_event_id": "0", "min_seq": seq}))
    await send(http, tenant, {"type": "StartRun", "run_id": run_id})
    await send(http, tenant, {"type": "StartStep", "run_id": run_id, "kind": "llm", "name": "x"})
    got = await asyncio.wait_for(stream, 30)
    assert [(m.id, m.event) for m in got] == [("1", "run.requested"), ("2", "run.started"), ("3", "run.step_started")]
    assert [m.json["chain_seq"] for m in got] == [1, 2, 3]
    # data is the whole envelope, intact: each one's hash recomputes and links to the one before
    assert [compute_hash(m.json) for m in got] == [m.json["hash"] for m in got]
    assert [m.json["prev_hash"] for m in got] == [GENESIS_HASH] + [m.json["hash"] for m in got[:-1]]


async def test_the_stream_starts_with_retry_and_sends_heartbeats(api, http):
    tenant = unique("tenant-")
    async with httpx.AsyncClient(base_url=api.url, timeout=30) as client:
        async with client.stream("GET", "/v1/streams/tenant", headers=bearer(tenant)) as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            first = await anext(messages(response).__aiter__())
    assert first.retry == 2000 and first.comments == ["runledger stream"]


async def test_reconnecting_at_random_points_yields_every_event_once_in_order(api, http):
    tenant = unique("tenant-")
    rng = random.Random(4)
    run = await send(http, tenant, {"type": "RequestRun", "agent_id": "a"})
    await send(http, tenant, {"type": "StartRun", "run_id": run["aggregate_id"]})
    total_steps = 120

    async def produce():
        for i in range(total_steps):
            await send(http, tenant, {"type": "StartStep", "run_id": run["aggregate_id"], "kind": "tool", "name": f"s{i}"})
    producer = asyncio.create_task(produce())
    received: list[tuple[int, int]] = []
    last = "0"
    reconnects = 0
    while len(received) < total_steps + 2:
        cut_after = rng.randint(1, 25)
        headers = {**bearer(tenant), "Last-Event-ID": last}
        async with httpx.AsyncClient(base_url=api.url, timeout=30) as client:
            async with client.stream("GET", "/v1/streams/tenant", headers=headers) as response:
                seen = 0
                async for message in messages(response):
                    if message.id is None:
                        continue
                    received.append((int(message.id), message.json["chain_seq"]))
                    last, seen = message.id, seen + 1
                    if seen >= cut_after or len(received) >= total_steps + 2:
                        break
        reconnects += 1
    await producer
    assert reconnects >= 5
    assert [seq for seq, _ in received] == list(range(1, total_steps + 3))
    assert [chain for _, chain in received] == list(range(1, total_steps + 3))


async def test_an_unknown_last_event_id_is_announced_not_skipped_silently(api, http):
    tenant = unique("tenant-")
    await send(http, tenant, {"type": "RequestRun", "agent_id": "a"})
    headers = {**bearer(tenant), "Last-Event-ID": "999"}
    async with httpx.AsyncClient(base_url=api.url, timeout=30) as client:
        async with client.stream("GET", "/v1/streams/tenant", headers=headers,
                                 params={"min_seq": 1}) as response:
            stream = messages(response).__aiter__()
            notice = await next_event(stream)
            await send(http, tenant, {"type": "RequestRun", "agent_id": "b"})
            live = await next_event(stream)
    assert notice.event == "replay_incomplete"
    assert notice.json == {"reason": "unknown_id", "requested_after": 999, "resumes_after": 1}
    assert (live.id, live.event, live.json["chain_seq"]) == ("2", "run.requested", 2)
    bad = await http.get("/v1/streams/tenant", headers={**bearer(tenant), "Last-Event-ID": "abc"})
    assert (bad.status_code, bad.json()["code"]) == (400, "invalid_last_event_id")


async def next_event(stream):
    """The next message that is an event or a notice (skipping the opening comment and pings)."""
    async for message in stream:
        if message.id is not None or message.event != "message":
            return message
    raise AssertionError("the stream ended")


async def test_other_tenants_channels_are_invisible_and_roles_apply(api, http):
    tenant, other = unique("tenant-"), unique("tenant-")
    run = await send(http, tenant, {"type": "RequestRun", "agent_id": "a"})
    async with httpx.AsyncClient(base_url=api.url, timeout=30) as client:
        async with client.stream("GET", f"/v1/streams/runs/{run['aggregate_id']}", headers=bearer(tenant),
                                 params={"min_seq": 1}) as own:
            assert own.status_code == 200
    theirs = await http.get(f"/v1/streams/runs/{run['aggregate_id']}", headers=bearer(other))
    assert (theirs.status_code, theirs.json()["code"]) == (404, "not_found")
    assert tenant not in theirs.text
    assert (await http.get("/v1/streams/tenant", headers=bearer(tenant, "approver"))).status_code == 403
    assert (await http.get("/v1/streams/tenant")).status_code == 401
