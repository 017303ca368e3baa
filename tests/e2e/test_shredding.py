"""Content sealed per author, then shredded, over real HTTP, Kafka, PostgreSQL and chdb."""
import asyncio
import json
import subprocess
import sys

import httpx

from tests.sse_client import messages
from tests.support import REPO, auth, send, unique


async def ok(http, tenant: str, body: dict, *roles: str, subject: str = "agent") -> int:
    response = await send(http, tenant, body, *roles, subject=subject)
    assert response.status_code == 200, response.text
    return response.json()["events"][-1]["chain_seq"]


async def get(http, path: str, tenant: str, seq: int, *roles: str, **params) -> dict:
    response = await http.get(path, headers=auth(tenant, *(roles or ("operator",))),
                              params={"min_seq": seq, "wait_ms": 10000, **params})
    assert response.status_code == 200, response.text
    return response.json()


async def failed_run(http, tenant: str, subject: str, error: str) -> tuple[str, int]:
    response = await send(http, tenant, {"type": "RequestRun", "agent_id": "bot", "labels": {"customer": "Jane Roe"}},
                          subject=subject)
    run = response.json()["aggregate_id"]
    await ok(http, tenant, {"type": "StartRun", "run_id": run}, subject=subject)
    return run, await ok(http, tenant, {"type": "FailRun", "run_id": run, "error": error}, subject=subject)


async def shown(http, tenant: str, run: str, seq: int) -> tuple:
    """(labels, error) as the runs API shows them, and the audit API's content of the run.failed event."""
    detail = await get(http, f"/v1/runs/{run}", tenant, seq)
    audit = await get(http, "/v1/audit/events", tenant, seq, "auditor", run_id=run, type="run.failed")
    return detail["labels"], detail["error"], [e["content"] for e in audit["items"]]


async def stream_text(api, tenant: str, until_seq: int) -> str:
    """Everything the tenant's SSE channel replays up to chain_seq until_seq, as one text."""
    datas = []
    async with httpx.AsyncClient(base_url=api.url, timeout=30) as http:
        async with http.stream("GET", "/v1/streams/tenant", headers=auth(tenant),
                               params={"last_event_id": "0", "min_seq": until_seq}) as response:
            async for message in messages(response):
                if message.id is not None:
                    datas.append(message.data)
                    if json.loads(message.data)["chain_seq"] == until_seq:
                        break
    return "\n".join(datas)


async def test_shredded_content_reads_as_shredded_everywhere_and_the_chain_still_verifies(api, http):
    tenant = unique("shred-")
    await ok(http, tenant, {"type": "SetContentPolicy", "store_content": True}, "admin")
    run, _ = await failed_run(http, tenant, "agent-7", "Jane Roe's card was declined")
    kept, seq = await failed_run(http, tenant, "agent-8", "timeout talking to the bank")
    assert await shown(http, tenant, run, seq) == (
        {"customer": "Jane Roe"}, "Jane Roe's card was declined", [{"error": "Jane Roe's card was declined"}])
    streamed = await asyncio.wait_for(stream_text(api, tenant, seq), 30)
    assert "Jane Roe" not in streamed and '"alg":"A256GCM"' in streamed.replace(" ", "")

    shred = await ok(http, tenant, {"type": "ShredSubject", "subject": "agent-7", "reason": "erasure request 117"},
                     "admin")
    assert await shown(http, tenant, run, shred) == ("[shredded]", "[shredded]", [{"error": "[shredded]"}])
    assert (await shown(http, tenant, kept, shred))[1] == "timeout talking to the bank"
    audit = await get(http, "/v1/audit/events", tenant, shred, "auditor", type="retention.subject_shredded")
    [event] = audit["items"]
    assert (event["payload"]["subject"], event["payload"]["reason"], len(event["payload"]["key_ids"])) == (
        "agent-7", "erasure request 117", 1)
    verified = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "infra.entry.cli", "verify", "--tenant", tenant, "--no-progress"],
        cwd=REPO, env=api.env(), capture_output=True, text=True, timeout=120)
    assert (verified.returncode, verified.stdout.split(":")[0]) == (0, f"OK tenant {tenant}"), verified.stderr
    assert f"{shred} events" in verified.stdout


async def test_a_shred_under_hold_is_refused_naming_it_and_nothing_changes(http):
    tenant = unique("shred-")
    await ok(http, tenant, {"type": "SetContentPolicy", "store_content": True}, "admin")
    run, _ = await failed_run(http, tenant, "agent-7", "words")
    placed = await send(http, tenant, {"type": "PlaceLegalHold", "matter": "Doe v. Acme", "reason": "r",
                                       "scope": {"kind": "run", "run_id": run}}, "admin")
    hold_id, seq = placed.json()["aggregate_id"], placed.json()["events"][-1]["chain_seq"]
    refused = await send(http, tenant, {"type": "ShredSubject", "subject": "agent-7", "reason": "r"}, "admin")
    assert (refused.status_code, refused.json()["code"]) == (409, "shred_under_hold")
    assert f"{hold_id} (Doe v. Acme)" in refused.json()["reason"]
    assert (await shown(http, tenant, run, seq))[1] == "words"
    for body, roles, status, code in (
            ({"type": "ShredSubject", "subject": "nobody", "reason": "r"}, ("admin",), 404, "not_found"),
            ({"type": "ShredSubject", "subject": "agent-7", "reason": "r"}, ("operator",), 403, "missing_role"),
            ({"type": "ShredSubject", "subject": "agent-7", "reason": "r"}, ("auditor",), 403, "missing_role")):
        response = await send(http, tenant, body, *roles)
        assert (response.status_code, response.json()["code"]) == (status, code), response.text
    after = await ok(http, tenant, {"type": "RequestRun", "agent_id": "bot"})
    assert after == seq + 1  # nothing refused was appended


async def test_by_default_a_tenant_stores_no_content(http):
    tenant = unique("shred-")
    run, seq = await failed_run(http, tenant, "agent-7", "Jane Roe's card was declined")
    assert await shown(http, tenant, run, seq) == ("[not stored]", "[not stored]", [{"error": "[not stored]"}])
