"""`runledger verify-readmodels --model archive` against a running service on real Kafka and PostgreSQL: the
service's archive projection writes each tenant's chain as tlog-tiles files (signing a checkpoint every 5 events
and the rest each second), the CLI checks the files against the chain as of the archive's own position, and a
deleted entry bundle, an altered sidecar line, an altered tile and a dropped checkpoint are each named exactly.
An audit sweep names the archive (domain/retention.py STORES): its tombstones are what the chain says, not
problems.
"""
import asyncio
import base64
from pathlib import Path

import pytest

from schemas import merkle
from schemas.tiles import tile_path
from tests.integration.test_archive import ADMIN, chain, finished_runs, quiet, send
from tests.integration.test_verify_readmodels import cli
from tests.support import Service, make_settings, unique

EVERY = 5
RUNS = 60   # 300 commands: with the sweep and the checkpoints (about 380 events), inside the second bundle
FIX = ("move the named files aside, then rebuild the archive in place: stop the projectors, remove "
       ".runledger/<prefix>/partitions under RUNLEDGER_ARCHIVE_DIR, start them")


@pytest.fixture(scope="module")
async def api():
    svc = Service(make_settings(checkpoint_every=EVERY, checkpoint_interval_s=1.0, retention_min_days_audit=0,
                                retention_sweep_interval_s=0)).start()
    try:
        await svc.ready(90)
        yield svc
    finally:
        svc.stop()


async def verify(svc, *args: str):
    return await asyncio.to_thread(cli, svc, "verify-readmodels", "--url", svc.url, "--no-progress", "--model",
                                   "archive", *args)


def published(size: int, signed: int) -> int:
    """Entries the archive's files hold once it has applied `size` events: full bundles, and to the checkpoint."""
    return max(size >> 8 << 8, signed)


@pytest.fixture(scope="module")
async def swept(api):
    """A tenant of RUNS finished runs, all removed by an audit sweep (which names the archive), signed to its end."""
    settings, tenant = api.settings, unique("vx-")
    runs, bodies = finished_runs(RUNS)
    await send(settings, tenant, [({"type": "SetRetentionPolicy", "record_class": "audit", "days": 0}, ADMIN)]
               + bodies)
    await send(settings, tenant, [({"type": "SweepRetention", "record_class": "audit"}, ADMIN)]
               + [({"type": "RequestRun", "agent_id": f"after-{i}"}, ("operator",)) for i in range(EVERY)])
    log, signed = await quiet(settings, tenant)
    return tenant, runs, log, signed


async def test_a_swept_tenant_s_archive_verifies_with_exact_counts_and_the_verdict_is_recorded(api, swept):
    tenant, runs, log, signed = swept
    [sweep] = [e for e in log if e["type"] == "retention.swept"]
    assert (sorted(sweep["payload"]["run_ids"]), "archive" in sweep["payload"]["stores"]) == (sorted(runs), True)
    rows = 2 * published(len(log), signed) + 1   # an entry and a sidecar line each, and the checkpoint

    done = await verify(api, "--tenant", tenant)

    assert (done.returncode, done.stderr, done.stdout) == (0, "", (
        f"OK tenant {tenant}: chain of {len(log)} events; archive {rows} rows match the chain; recorded as "
        f"verification.recorded at chain_seq {len(log) + 1}\n"))
    base = Path(api.env()["RUNLEDGER_ARCHIVE_DIR"]) / tenant
    tombstones = sum(line.count(b'"swept_by"') for path in (base / "events").rglob("*") if path.is_file()
                     for line in [path.read_bytes()])
    assert tombstones > 0   # the sweep's tombstones are there (in every version of their bundles), and no problem
    recorded = next(e for e in await chain(api.settings, tenant) if e["type"] == "verification.recorded")
    assert (recorded["chain_seq"], recorded["payload"]["ok"], recorded["payload"]["problems"],
            recorded["payload"]["models"]) == (len(log) + 1, True, [], {"archive": {
                "rows": rows, "missing": 0, "extra": 0, "mismatched": 0, "applied": len(log), "stopped_at": None,
                "ok": True}})


async def test_each_damaged_file_is_named_exactly_and_putting_it_back_verifies(api, swept):
    tenant = swept[0]
    log, signed = await quiet(api.settings, tenant)   # signed again after the verification the test above recorded
    size, rows = len(log), 2 * published(len(log), signed) + 1
    settled = await verify(api, "--tenant", tenant, "--no-record")   # waits for the archive to apply it all
    assert (settled.returncode, settled.stdout) == (0, f"OK tenant {tenant}: chain of {size} events; archive {rows} "
                                                       "rows match the chain\n")
    assert 256 < signed < 512 and signed >= size >> 8 << 8, (size, signed)   # the tile of `signed` is a partial one
    base = Path(api.env()["RUNLEDGER_ARCHIVE_DIR"]) / tenant
    applied = f"the archive has applied its chain to chain_seq {size}"

    async def named(rel: str, damage) -> list[str]:
        path = base / rel
        good = path.read_bytes()
        damage(path, good)
        try:
            found = await verify(api, "--tenant", tenant, "--no-record")
        finally:
            path.write_bytes(good)
        assert (found.returncode, found.stderr) == (1, ""), found.stdout
        return found.stdout.splitlines()

    def summary(rows_read: int) -> str:
        return f"PROBLEMS tenant {tenant}: chain of {size} events; archive {rows_read} rows"

    deleted = await named("tile/entries/000", lambda path, good: path.unlink())
    assert deleted == [summary(rows - 256), f"  archive tenant {tenant} entries path tile/entries/000: missing: "
                                            f"{applied}, so it publishes chain_seq 1 to 256 here; fix: {FIX}"]

    lines = (base / "events/000").read_bytes().splitlines(keepends=True)
    at = next(i for i, line in enumerate(lines) if b'"swept_by"' not in line and b'"schema_version":1' in line)
    altered = await named("events/000", lambda path, good: path.write_bytes(b"".join(
        lines[:at] + [lines[at].replace(b'"schema_version":1', b'"schema_version":2')] + lines[at + 1:])))
    assert altered == [summary(rows), f"  archive tenant {tenant} events chain_seq {at + 1}: mismatched (line): "
                                      f"differs from the chain in line (line {at + 1} of events/000); fix: {FIX}"]

    n, i = divmod(signed - 1, 256)   # the last hash of the tile the published checkpoint ends in
    tile = tile_path(0, n, i + 1)
    leaves = [merkle.leaf_hash(bytes.fromhex(e["hash"])) for e in log[:signed]]
    leaves[-1] = bytes([leaves[-1][0] ^ 1]) + leaves[-1][1:]
    wrong = base64.b64encode(merkle.range_root(merkle.row_reader(merkle.levels(leaves)), 0, signed)).decode()
    note = next(e for e in log if e["type"] == "checkpoint.signed" and e["payload"]["size"] == signed)
    flipped = await named(tile, lambda path, good: path.write_bytes(
        good[:i * 32] + bytes([good[i * 32] ^ 1]) + good[i * 32 + 1:]))
    assert flipped == [
        summary(rows),
        f"  archive tenant {tenant} tiles path {tile}: mismatched: {tile}: hash {i} is not the hash of entry {i} of "
        f"tile/entries/{tile.removeprefix('tile/0/')} (chain_seq {signed}); fix: {FIX}",
        f"  archive tenant {tenant} checkpoint path checkpoint: mismatched: checkpoint: the root of size {signed} "
        f"from the tiles is {wrong}, but the checkpoint signs {note['payload']['root']}; fix: {FIX}"]

    dropped = await named("checkpoint", lambda path, good: path.unlink())
    assert dropped == [summary(rows - 1), f"  archive tenant {tenant} checkpoint path checkpoint: missing: the archive "
                                          f"has applied the checkpoint.signed at chain_seq {note['chain_seq']} (size "
                                          f"{signed}); no file publishes it; fix: {FIX}"]

    again = await verify(api, "--tenant", tenant, "--no-record")
    assert (again.returncode, again.stdout) == (0, settled.stdout)
