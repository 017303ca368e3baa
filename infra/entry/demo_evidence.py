"""The demo's evidence step: wait for a signed checkpoint, export the held run, verify it offline, tamper a copy."""
import asyncio
import tempfile
import time
from pathlib import Path

from infra.entry.export import export
from schemas.bundle import load_key, verify_bundle
from schemas.bundle_scope import parse_scope


async def checkpoint_covering(http, headers: dict, seq: int, deadline_s: float = 60) -> dict:
    """The first signed checkpoint whose tree reaches chain_seq `seq` (the processor signs on its interval)."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        response = await http.get("/v1/evidence/checkpoint", params={"size": seq}, headers=headers)
        if response.status_code == 200:
            return response.json()
        await asyncio.sleep(0.5)
    raise TimeoutError(f"no signed checkpoint reached chain_seq {seq} within {deadline_s:.0f}s")


async def show_evidence(demo, run_id: str, seq: int) -> None:
    print("evidence: a signed checkpoint, the held run exported and verified offline")
    http, headers = demo.agent.http, {"Authorization": f"Bearer {demo.admin.token}"}
    checkpoint = await checkpoint_covering(http, headers, seq)
    print(f"  checkpoint {checkpoint['origin']} size {checkpoint['size']} root {checkpoint['root']}")
    keys = (await http.get("/v1/evidence/keys", headers=headers)).json()["items"]
    key = load_key(keys[-1]["key"])
    out = Path(tempfile.mkdtemp(prefix="runledger-demo-")) / "run.bundle"
    exported = await export(demo.settings, demo.tenant, parse_scope(f"run:{run_id}"), out, None,
                            str(http.base_url), False, lambda _: None)
    print(f"  {exported.summary().splitlines()[0]}")
    report = verify_bundle(out, key)
    if not report.ok:
        raise RuntimeError(f"the demo bundle does not verify: {report.problems}")
    print(f"  verify-bundle (offline, key {keys[-1]['key'][:40]}...): OK, {report.events} events")
    tampered = out.with_name("tampered.bundle")
    data = bytearray(out.read_bytes())
    at = data.find(b'"agent_id"')
    data[at + 13] ^= 0x01  # one byte of the first event
    tampered.write_bytes(bytes(data))
    refused = verify_bundle(tampered, key)
    if refused.ok:
        raise RuntimeError("a tampered bundle verified")
    print(f"  verify-bundle of a copy with one byte changed: REFUSED — {refused.problems[0]}")
