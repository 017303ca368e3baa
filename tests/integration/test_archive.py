"""The archive projection against the real broker: the command processor appends a tenant's chain (signing a
checkpoint every 5 unsigned events, and the rest each second), a ProjectorRunner archives it as C2SP
tlog-tiles, and the archive verifies from its files alone (in process, and with `runledger verify-archive`).
A runner stopped mid-way and a new one resumed from what the files say end byte for byte where one fresh
replay of the log ends; a retention sweep that names the archive turns its runs' envelopes into tombstones,
and the archive still verifies.

The domain does not yet name the archive among the stores a sweep governs (domain/retention.py STORES, which
this work does not edit): the processor runs in this process, with the audit class's stores extended by
"archive" for the test, which is the one-line change docs/archive.md describes.
"""
import asyncio
import base64
import json
import subprocess
import sys
from pathlib import Path

import pytest
from uuid_utils.compat import uuid7

from commands.processor import CommandProcessor
from domain.retention import Families
from projectors.archive import ArchiveProjection
from projectors.runner import ProjectorRunner
from queries.lag import projector_lag
from schemas.bundle import jcs
from schemas.notes import Signer, tenant_origin
from schemas.tiles import parse_path
from schemas.tiles_verify import verify_archive
from tests.support import (REPO, SIGNING_KEY, command, events, make_settings, produce_commands, replies, unique,
                           wait_until)

EVERY = 5
RUNS, BATCHES = 60, 6   # each batch of runs ends signed: checkpoints all along the chain
ADMIN = ("admin",)


@pytest.fixture
async def ledger(monkeypatch):
    settings = make_settings(checkpoint_every=EVERY, checkpoint_interval_s=1.0, retention_min_days_audit=0,
                             partitions=2)
    stop = asyncio.Event()
    processor = asyncio.create_task(CommandProcessor(settings).run(stop))
    try:
        yield settings
    finally:
        stop.set()
        await processor


async def send(settings, tenant: str, bodies: list[tuple[dict, tuple[str, ...]]]) -> None:
    """Produce commands in order and wait until each is accepted."""
    commands = [command(tenant, body, "agent" if roles != ADMIN else "root", roles) for body, roles in bodies]
    await produce_commands(settings, commands)
    ids = {c["command_id"] for c in commands}

    async def answered():
        got = {i: r for i, r in (await replies(settings)).items() if i in ids}
        assert [r for r in got.values() if r["status"] != "accepted"] == []
        return len(got) == len(ids)
    await wait_until(answered, 120, f"{len(ids)} replies")


async def chain(settings, tenant: str) -> list[dict]:
    return [e for e in await events(settings) if e["tenant_id"] == tenant]


async def quiet(settings, tenant: str) -> tuple[list[dict], int]:
    """Wait until the tenant's last checkpoint signs every event but its own (checkpoint.opened, .signed): the log
    stops growing. Returns the chain and that checkpoint's size."""
    async def signed():
        envelopes = await chain(settings, tenant)
        size = envelopes[-1]["payload"]["size"] if envelopes[-1]["type"] == "checkpoint.signed" else -1
        return (envelopes, size) if size > 0 and all(e["type"].startswith("checkpoint.") for e in envelopes[size:]) \
            else None
    return await wait_until(signed, 60, f"tenant {tenant}'s chain to be signed to its end")


def finished_runs(n: int) -> tuple[list[str], list[tuple[dict, tuple[str, ...]]]]:
    runs, bodies = [], []
    for i in range(n):
        run, call = str(uuid7()), str(uuid7())
        runs.append(run)
        bodies += [({"type": "RequestRun", "run_id": run, "agent_id": f"bot-{i}"}, ("operator",)),
                   ({"type": "StartRun", "run_id": run}, ("operator",)),
                   ({"type": "RequestToolCall", "tool_call_id": call, "run_id": run, "tool": "search",
                     "risk_tier": "low", "params_digest": "ab" * 32}, ("operator",)),
                   ({"type": "RecordCost", "run_id": run, "provider": "p", "model": "m", "amount_micros": 5,
                     "currency": "USD"}, ("operator",)),
                   ({"type": "CompleteRun", "run_id": run}, ("operator",))]
    return runs, bodies


async def run_until(settings, projection: ArchiveProjection, done) -> None:
    """Run a projector runner over `projection` until done(events applied so far) says stop, or it is caught up."""
    stop, applied = asyncio.Event(), [0]
    runner = ProjectorRunner(settings, projection, batch_max=40)

    def count(_name: str, stored: int, _seconds: float) -> None:
        applied[0] += stored
        if done is not None and done(applied[0]):
            stop.set()
    runner.on_applied.append(count)
    task = asyncio.create_task(runner.run(stop))
    try:
        if done is None:
            reader = await ArchiveProjection(projection.root, projection.prefix).open()   # as the lag metrics read it
            await wait_until(lambda: caught_up(settings, reader), 120, "the archive to catch up")
            stop.set()
        await asyncio.wait_for(task, 120)
    finally:
        stop.set()
        await task
    assert (runner.failed, runner.admission.held) == (None, {})


async def caught_up(settings, projection: ArchiveProjection) -> bool:
    return all(r.lag_events == 0 for r in await projector_lag(settings, [projection]))


def tree(root: Path) -> dict[str, bytes]:
    """Every file under the archive root but temp files, the positions' wall-clock stamps blanked."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if p.is_file() and not rel.startswith(".runledger/tmp/"):
            data = p.read_bytes()
            if "/partitions/" in rel:
                data = json.dumps({**json.loads(data), "updated_at": None}, sort_keys=True).encode()
            out[rel] = data
    return out


def verify_cli(settings, root: Path, tenant: str, vkey: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "infra.entry.cli", "verify-archive", str(root), "--key", vkey,
                           "--tenant", tenant], cwd=REPO, capture_output=True, text=True, timeout=120)


async def test_the_archive_of_a_live_chain_verifies_resumes_exactly_and_survives_a_sweep(ledger, tmp_path):
    settings, tenant = ledger, unique("ar-")
    signer = Signer(tenant_origin("local", tenant), base64.b64decode(SIGNING_KEY))   # the deployment's, by its seed
    vkey, key = signer.vkey, f"{signer.name}+{signer.key_id:08x}"
    runs, bodies = finished_runs(RUNS)
    await send(settings, tenant, [({"type": "SetRetentionPolicy", "record_class": "audit", "days": 0}, ADMIN)])
    per_batch = len(bodies) // BATCHES
    for lo in range(0, len(bodies), per_batch):
        await send(settings, tenant, bodies[lo:lo + per_batch])
        log, size = await quiet(settings, tenant)
    assert size > 300   # more than one full bundle of 256

    # A runner stops mid-way; a new process resumes from the position the files keep
    live = tmp_path / "live"
    first = await ArchiveProjection(live, settings.topic_prefix).open()
    await run_until(settings, first, lambda applied: applied >= 150)
    stopped_at = (await (await ArchiveProjection(live, settings.topic_prefix).open()).head(tenant))[0]
    assert 150 <= stopped_at < len(log)
    [midway] = verify_archive(live, [signer.verifier])
    assert (midway.problems, midway.size <= stopped_at) == ([], True)
    await run_until(settings, await ArchiveProjection(live, settings.topic_prefix).open(), None)

    # it ends byte for byte where one replay of the whole log into a fresh directory ends
    fresh = tmp_path / "fresh"
    await run_until(settings, await ArchiveProjection(fresh, settings.topic_prefix).open(), None)
    assert tree(live) == tree(fresh)
    signed = [e for e in log if e["type"] == "checkpoint.signed"]
    assert (live / tenant / "checkpoint").read_text() == signed[-1]["payload"]["note"]
    [report] = verify_archive(live, [signer.verifier])
    assert (report.problems, report.warnings, report.size, report.checkpoint_size, report.envelopes,
            report.tombstones, report.key) == ([], [], size, size, size, 0, key)
    assert report.checkpoints == len([e for e in signed if e["chain_seq"] <= size])
    verified = await asyncio.to_thread(verify_cli, settings, live, tenant, vkey)
    assert (verified.returncode, verified.stderr) == (0, ""), verified.stdout
    assert verified.stdout.startswith(f"OK archive {live / tenant}: tenant {tenant}, {size} entries; "
                                      f"checkpoint size {size} signed by {key}")

    # A sweep of the audit class names the archive: every swept run's envelopes become tombstones
    await send(settings, tenant, [({"type": "SweepRetention", "record_class": "audit"}, ADMIN)]
               + [({"type": "RequestRun", "agent_id": f"after-{i}"}, ("operator",)) for i in range(EVERY)])
    log, size = await quiet(settings, tenant)
    [sweep] = [e for e in log if e["type"] == "retention.swept"]
    assert (sorted(sweep["payload"]["run_ids"]), sweep["payload"]["stores"]) == \
        (sorted(runs), ["audit", "cost", "archive"])
    families, swept = Families(), set()
    for env in log[:sweep["chain_seq"] - 1]:
        if families.run_of(env) in runs:
            swept.add(env["chain_seq"])
        families.track(env)
    await run_until(settings, await ArchiveProjection(live, settings.topic_prefix).open(), None)
    lines = {}
    for rel, data in tree(live).items():
        if rel.startswith(f"{tenant}/events/"):
            place = parse_path(rel.removeprefix(f"{tenant}/"))
            for i, line in enumerate(data.splitlines(keepends=True)):
                lines.setdefault(place.n * 256 + i + 1, set()).add(line)
    assert sorted(lines) == list(range(1, size + 1))
    tombstone = {seq: jcs({"chain_seq": seq, "hash": log[seq - 1]["hash"], "swept_by": sweep["chain_seq"]}) + b"\n"
                 for seq in swept}
    assert lines == {seq: {tombstone.get(seq, jcs(log[seq - 1]) + b"\n")} for seq in range(1, size + 1)}
    assert len(swept) == sweep["payload"]["counts"]["events"]   # the domain's own count of what it swept
    [report] = verify_archive(live, [signer.verifier])
    assert (report.problems, report.warnings, report.size, report.tombstones, report.envelopes) == \
        ([], [], size, len(swept), size - len(swept))
    again = tmp_path / "again"
    await run_until(settings, await ArchiveProjection(again, settings.topic_prefix).open(), None)
    assert tree(again) == tree(live)

    # a file altered on disk is named, and the command says so with exit 1
    entries = live / tenant / "tile" / "entries" / "000"
    data = bytearray(entries.read_bytes())
    data[2] ^= 0x01
    entries.write_bytes(bytes(data))
    altered = await asyncio.to_thread(verify_cli, settings, live, tenant, vkey)
    wrong = bytes(data[2:34]).hex()
    assert (altered.returncode, altered.stdout) == (1, (
        f"FAILED archive {live / tenant}: tenant {tenant}, 1 problems\n  tile/entries/000: entry 0 (chain_seq 1) is "
        f"{wrong}, but line 1 of events/000 and hash 0 of tile/0/000 say {log[0]['hash']}\n"))
