"""`runledger export` and `runledger verify-bundle` as an operator runs them, against real Kafka and the API.

`runledger serve` signs each tenant's tree head every 5 unsigned events. A run goes through the API, then the
export CLI (a child process with the service's environment) reads the tenant's chain from Kafka, writes the
bundle up to the latest checkpoint and records the export through the API; the bundle verifies offline
under the key derived from the deployment's signing seed (not the bundle's own), the export.recorded event
is on the chain with the bundle's digest, a later export proves it extends the first, and bad input exits 2.
"""
import asyncio
import base64
import hashlib
import json
import tarfile
import re
import subprocess
import sys
import uuid

import httpx
import pytest

from domain.policy import REQUEST_SCHEMA
from schemas.notes import Signer, tenant_origin
from tests.support import REPO, SIGNING_KEY, Service, events, free_port, make_settings, token, unique, wait_until

EVERY = 5


@pytest.fixture(scope="module")
async def api():
    svc = Service(make_settings(checkpoint_every=EVERY, checkpoint_interval_s=0)).start()
    try:
        await svc.ready(90)
        yield svc
    finally:
        svc.stop()


async def ok(svc, tenant: str, body: dict, *roles: str) -> dict:
    async with httpx.AsyncClient(base_url=svc.url, timeout=30) as http:
        response = await http.post("/v1/commands", json=body,
                                   headers={"Authorization": f"Bearer {token(tenant, 'agent', roles or ('operator',))}"})
    assert response.status_code == 200, response.text
    return response.json()


WITH_POLICY: set[str] = set()  # tenants whose envelope allows every tool call


async def finished_run(svc, tenant: str) -> tuple[str, int]:
    """A run with an allowed tool call and a cost, completed: (run id, its last chain_seq)."""
    if tenant not in WITH_POLICY:
        await ok(svc, tenant, {"type": "PublishPolicy", "policy_id": "p", "version": "1.0.0", "cedar_schema": REQUEST_SCHEMA,
                               "policies": '@id("all") permit(principal, action, resource);'}, "admin")
        await ok(svc, tenant, {"type": "ActivatePolicy", "policy_id": "p", "version": "1.0.0"}, "admin")
        WITH_POLICY.add(tenant)
    run = (await ok(svc, tenant, {"type": "RequestRun", "agent_id": "bot"}))["aggregate_id"]
    await ok(svc, tenant, {"type": "StartRun", "run_id": run})
    call = await ok(svc, tenant, {"type": "RequestToolCall", "run_id": run, "tool": "search", "risk_tier": "low",
                                  "params_digest": "ab" * 32})
    assert call["decision"]["decision"] == "ALLOW"
    await ok(svc, tenant, {"type": "RecordCost", "run_id": run, "provider": "openai", "model": "m",
                           "amount_micros": 5, "currency": "USD"})
    return run, (await ok(svc, tenant, {"type": "CompleteRun", "run_id": run}))["events"][-1]["chain_seq"]


async def chain(svc, tenant: str) -> list[dict]:
    return [e for e in await events(svc.settings) if e["tenant_id"] == tenant]


async def signed_past(svc, tenant: str, seq: int) -> dict:
    """Append runs until a checkpoint covers chain_seq `seq` (the processor signs every EVERY events)."""
    for _ in range(EVERY):
        await ok(svc, tenant, {"type": "RequestRun", "agent_id": "filler"})

    async def covered():
        found = [e for e in await chain(svc, tenant) if e["type"] == "checkpoint.signed" and e["payload"]["size"] >= seq]
        return found[0] if found else None
    return await wait_until(covered, 60, f"a checkpoint of {tenant} covering chain_seq {seq}")


def cli(svc, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "infra.entry.cli", *map(str, args)], cwd=REPO, env=svc.env(),
                          capture_output=True, text=True, timeout=180)


async def run_cli(svc, *args: str) -> subprocess.CompletedProcess:
    return await asyncio.to_thread(cli, svc, *args)


def vkey(tenant: str) -> str:
    """The log's key as the deployment publishes it, from its signing seed, not from any bundle."""
    return Signer(tenant_origin("local", tenant), base64.b64decode(SIGNING_KEY)).vkey


SUMMARY = re.compile(r"exported run (?P<run>\S+) of tenant (?P<tenant>\S+): (?P<events>\d+) events \(\+0 governance\) "
                     r"up to checkpoint size (?P<size>\d+) \(chain_seq \d+\) to (?P<path>\S+) \(\d+ bytes\), "
                     r"sha256 (?P<sha>[0-9a-f]{64}); recorded as export.recorded at chain_seq (?P<seq>\d+) "
                     r"\(job (?P<job>[0-9a-f-]{36})\)")


async def test_an_exported_run_verifies_offline_is_recorded_on_the_chain_and_a_later_export_extends_it(api, tmp_path):
    tenant = unique("ex-")
    run, last = await finished_run(api, tenant)
    await signed_past(api, tenant, last)
    first = await run_cli(api, "export", "--tenant", tenant, "--scope", f"run:{run}", "--out", tmp_path / "one.tar",
                          "--url", api.url, "--no-progress")
    assert first.returncode == 0, first.stderr
    summary = SUMMARY.match(first.stdout.splitlines()[0])
    assert summary is not None, first.stdout
    assert (summary["run"], summary["tenant"], summary["events"], summary["path"], summary["sha"]) == (
        run, tenant, "6", str(tmp_path / "one.tar"), hashlib.sha256((tmp_path / "one.tar").read_bytes()).hexdigest())
    verified = await run_cli(api, "verify-bundle", tmp_path / "one.tar", "--key", vkey(tenant))
    assert (verified.returncode, verified.stderr) == (0, ""), verified.stdout
    assert verified.stdout.startswith(f"OK bundle {tmp_path / 'one.tar'}: run {run} of tenant {tenant}, 6 events;")

    full_scope = {"kind": "run", "id": run, "subject": None, "start": None, "end": None, "query": None}
    jobs = [e for e in await chain(api, tenant) if e["type"].startswith("export")]
    recorded_id = next(e["aggregate_id"] for e in jobs if e["type"] == "export.recorded")
    # the job: requested before the bundle was written, then completed with its digest in the recording command
    assert [(e["type"], e["aggregate_id"], e["payload"], e["actor"]["subject"]) for e in jobs] == [
        ("export_job.requested", summary["job"], {"scope": full_scope, "checkpoint_size": int(summary["size"]),
                                                  "requested_by": "runledger-cli:export"}, "runledger-cli:export"),
        ("export_job.completed", summary["job"], {"export_id": recorded_id, "bundle_sha256": summary["sha"]},
         "runledger-cli:export"),
        ("export.recorded", recorded_id, {"scope": full_scope, "events": 6, "checkpoint_size": int(summary["size"]),
                                          "bundle_sha256": summary["sha"], "exported_by": "runledger-cli:export"},
         "runledger-cli:export")]
    assert [e["chain_seq"] for e in jobs][1:] == [int(summary["seq"]) - 1, int(summary["seq"])]
    intact = await run_cli(api, "verify", "--tenant", tenant, "--no-progress")
    assert (intact.returncode, intact.stdout.split(":")[0]) == (0, f"OK tenant {tenant}"), intact.stdout

    await signed_past(api, tenant, int(summary["seq"]))
    second = await run_cli(api, "export", "--tenant", tenant, "--scope", "tenant", "--out", tmp_path / "two.tar",
                           "--url", api.url, "--no-progress")
    assert second.returncode == 0, second.stderr
    extends = await run_cli(api, "verify-bundle", tmp_path / "two.tar", tmp_path / "one.tar", "--key", vkey(tenant))
    assert (extends.returncode, extends.stdout.rstrip().endswith(f"; it extends {tmp_path / 'one.tar'}")) == (0, True), (
        extends.stdout)


async def test_bad_input_exits_2_naming_the_problem_and_an_export_that_cannot_be_audited_exits_1_writing_nothing(api, tmp_path):
    tenant, elsewhere, fresh = unique("ex-"), unique("ex-"), unique("ex-")
    run, last = await finished_run(api, tenant)
    await signed_past(api, tenant, last)
    foreign, _ = await finished_run(api, elsewhere)
    await ok(api, fresh, {"type": "RequestRun", "agent_id": "alone"})
    missing = str(uuid.uuid4())
    out = tmp_path / "b.tar"
    for scope, who, message in [
            ("thread:1", tenant, "error: --scope 'thread:1': unknown scope kind 'thread': use run:<uuid>, "
                                 "approval:<uuid>, actor:<subject>, time:<start>/<end>, query:<filter>=<value>&... "
                                 "(a discovery query's results) or tenant"),
            ("time:2026-02-01T00:00:00Z/2026-01-01T00:00:00Z", tenant, "error: --scope 'time:2026-02-01T00:00:00Z/"
             "2026-01-01T00:00:00Z': time scope: the range is reversed or empty: end 2026-01-01T00:00:00.000000Z is "
             "not after start 2026-02-01T00:00:00.000000Z"),
            (f"run:{missing}", tenant, f"error: no events of run {missing} in tenant {tenant}"),
            (f"run:{foreign}", tenant, f"error: no events of run {foreign} in tenant {tenant}"),
            ("tenant", fresh, f"error: no checkpoint yet in tenant {fresh}: none of its 1 events is covered by a "
                              f"signed checkpoint; export again once one is recorded")]:
        refused = await run_cli(api, "export", "--tenant", who, "--scope", scope, "--out", out, "--url", api.url,
                                "--no-progress")
        assert (refused.returncode, refused.stderr, refused.stdout) == (2, message + "\n", "")
        assert list(tmp_path.iterdir()) == []
    # bad input changed nothing: no job was opened for any of it
    assert [e for e in await chain(api, tenant) if e["type"].startswith("export")] == []
    nowhere = f"http://127.0.0.1:{free_port()}"
    unaudited = await run_cli(api, "export", "--tenant", tenant, "--scope", f"run:{run}", "--out", out,
                              "--url", nowhere, "--no-progress")
    assert (unaudited.returncode, unaudited.stdout, list(tmp_path.iterdir())) == (1, "", [])
    assert unaudited.stderr.startswith("error: nothing exported: the export could not be opened as a job on the "
                                       f"chain, so it would not be audited: the API at {nowhere} is unreachable ("), (
        unaudited.stderr)
    assert [e for e in await chain(api, tenant) if e["type"].startswith("export")] == []


async def test_the_chain_read_resumes_from_a_log_offset_yielding_exactly_the_records_after_it(api):
    from infra.entry.verify import tenant_records
    tenant = unique("ex-")
    for _ in range(4):
        await ok(api, tenant, {"type": "RequestRun", "agent_id": "bot"})
    whole = [(offset, env["chain_seq"]) async for offset, env in tenant_records(api.settings, tenant)]
    assert [seq for _, seq in whole] == list(range(1, len(whole) + 1))
    offsets = [offset for offset, _ in whole]
    assert offsets == sorted(set(offsets))
    for k in (1, len(whole) // 2, len(whole) - 1):
        tail = [(offset, env["chain_seq"]) async for offset, env in tenant_records(api.settings, tenant,
                                                                                    start=offsets[k])]
        assert tail == whole[k:]


async def test_a_query_copy_holds_exactly_the_events_the_discovery_api_returns_for_that_query(api, tmp_path):
    tenant = unique("ex-")
    first, _ = await finished_run(api, tenant)
    run, last = await finished_run(api, tenant)
    await signed_past(api, tenant, last)
    out = tmp_path / "q.tar"
    done = await run_cli(api, "export", "--tenant", tenant, "--scope", f"query:tool=search&run_id={run}", "--out", out,
                         "--url", api.url, "--no-progress")
    assert done.returncode == 0, done.stderr
    with tarfile.open(out) as tar:
        manifest = json.loads(tar.extractfile("manifest.json").read())
        bundled = [json.loads(line) for line in tar.extractfile("events.jsonl").read().splitlines()]
    size = manifest["checkpoint"]["size"]
    async with httpx.AsyncClient(base_url=api.url, timeout=30) as http:
        found = await http.get("/v1/audit/events", params={"tool": "search", "run_id": run, "min_seq": size},
                               headers={"Authorization": f"Bearer {token(tenant, 'auditor', ('auditor',))}"})
    assert found.status_code == 200, found.text
    discovered = sorted(item["chain_seq"] for item in found.json()["items"] if item["chain_seq"] <= size)
    assert [e["chain_seq"] for e in bundled] == discovered  # the call's request is itself selected: no context
    assert [e["type"] for e in bundled] == ["tool_call.requested", "tool_call.policy_decided"]
    assert (bundled[0]["payload"]["run_id"], len({e["aggregate_id"] for e in bundled})) == (run, 1)  # not `first`
    assert (manifest["counts"]["scope_events"], manifest["counts"]["context_events"]) == (len(discovered), 0)
    verified = await run_cli(api, "verify-bundle", out, "--key", vkey(tenant))
    assert (verified.returncode, verified.stderr) == (0, ""), verified.stdout
