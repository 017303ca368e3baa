"""The demo's evidence step: wait for a signed checkpoint, export the held run, verify it offline, tamper a copy,
and check the tenant's archive (C2SP tlog-tiles files) from the files alone."""
import asyncio
import tempfile
import time
from pathlib import Path

from infra.entry.export import export
from schemas.bundle import load_key, verify_bundle
from schemas.bundle_scope import parse_scope
from schemas.tiles_verify import verify_tenant


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
    await show_archive(demo, keys[-1]["key"], checkpoint["size"])


async def archive_reaching(path: Path, size: int, deadline_s: float = 60) -> bool:
    """Whether the archive projection published a checkpoint of at least `size` in `path` within the deadline."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        note = path / "checkpoint"
        if note.is_file() and int(note.read_text().split("\n")[1]) >= size:
            return True
        await asyncio.sleep(0.5)
    return False


async def show_archive(demo, key_text: str, size: int) -> None:
    """The archive as an auditor checks it: from the directory alone, under the log's key."""
    path = Path(demo.settings.archive_dir) / demo.tenant
    if not await archive_reaching(path, size):
        raise RuntimeError(f"the archive in {path} did not reach the checkpoint of size {size} within 60 s")
    report = verify_tenant(path, [load_key(key_text)], demo.tenant)
    if not report.ok:
        raise RuntimeError(f"the demo archive does not verify: {report.problems}")
    print(f"  archive {path}: C2SP tlog-tiles, {report.size} entries, checkpoint size {report.checkpoint_size}: "
          f"verified from the files alone (runledger verify-archive {path} --key ...)")
