"""`runledger export`: read a tenant's chain from Kafka, write an evidence bundle, record the export on the chain.

The bundle is written by schemas/bundle_write.py as the chain streams in (the scope's events to a spool, 32
bytes per other event), assembled as FILE.partial beside a work directory FILE.partial.d, and renamed to
FILE only when complete, so FILE is always a whole bundle. A run that died half-way leaves FILE.partial*;
the next run says so, discards them and starts over from the chain (which only ever grows). Then the
export is recorded: RecordExport through the API with an auditor token minted from RUNLEDGER_JWT_SECRET.
"""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import httpx
from tqdm import tqdm

from infra.adapters.http.auth import mint
from infra.adapters.settings import Settings
from infra.entry.client import LedgerClient
from infra.entry.verify import tenant_envelopes
from schemas.bundle_scope import describe
from schemas.bundle_write import BundleWriter, Written
from schemas.envelope import iso

EXPORTER = "runledger-cli:export"


class NotRecorded(Exception):
    """The bundle is written, but the API did not record the export (exit 1; the file is kept)."""

    exported: "Exported | None" = None


@dataclass(frozen=True)
class Exported:
    written: Written
    chain_seq: int | None = None

    def summary(self) -> str:
        m, w = self.written.manifest, self.written
        cp, counts = m["checkpoint"], m["counts"]
        line = (f"exported {describe(m['scope'])} of tenant {m['tenant']}: {counts['scope_events']} events "
                f"(+{counts['governance_events']} governance) up to checkpoint size {cp['size']} "
                f"(chain_seq {cp['chain_seq']}) to {w.path} ({w.nbytes} bytes), sha256 {w.sha256}")
        if self.chain_seq is not None:
            line += f"; recorded as export.recorded at chain_seq {self.chain_seq}"
        if m["uncovered"]:
            line += (f"\n{m['uncovered']} events after the checkpoint are not yet covered by a signed checkpoint "
                     f"and are not in the bundle")
        return line


def partial_paths(out: Path) -> tuple[Path, Path]:
    return out.with_name(out.name + ".partial"), out.with_name(out.name + ".partial.d")


def discard(*paths: Path) -> bool:
    """Remove what an unfinished export left; True if there was anything."""
    found = False
    for path in paths:
        if path.is_dir():
            shutil.rmtree(path)
            found = True
        elif path.exists():
            path.unlink()
            found = True
    return found


async def write(settings: Settings, tenant: str, scope: dict[str, Any], out: Path, since_size: int | None,
                progress: bool, say: Callable[[str], None]) -> Written:
    """Stream the chain into a bundle at `out`, atomically (FILE.partial, then rename)."""
    partial, work = partial_paths(out)
    if discard(partial, work):
        say(f"found an unfinished export at {partial} (an earlier run stopped before it finished); "
            f"discarding it and starting over")
    writer = BundleWriter(tenant, scope, work, since_size)
    try:
        async for env in tenant_envelopes(settings, tenant, progress):
            writer.feed(env)
        with tqdm(unit="ev", desc="writing events and proofs", disable=not progress) as bar:
            written = writer.finish(partial, iso(datetime.now(timezone.utc)), bar.update)
        os.replace(partial, out)
        fd = os.open(out.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        return Written(out, written.sha256, written.nbytes, written.manifest)
    finally:
        writer.close()
        discard(partial, work)


async def record(settings: Settings, url: str, written: Written) -> int:
    """RecordExport through the API; the chain_seq of the export.recorded event."""
    m = written.manifest
    token = mint(settings.jwt_secret.get_secret_value(), m["tenant"], EXPORTER, ["auditor"],
                 settings.jwt_audience, 600)
    body = {"type": "RecordExport", "scope": m["scope"], "events": m["counts"]["scope_events"],
            "checkpoint_size": m["checkpoint"]["size"], "bundle_sha256": written.sha256}
    not_yet = f"the bundle is written to {written.path} (sha256 {written.sha256}), but the export is not yet recorded"
    try:
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            outcome = await LedgerClient(http, token).send(body, idempotency_key=f"export-{written.sha256}")
    except httpx.HTTPError as error:
        raise NotRecorded(f"{not_yet}: the API at {url} is unreachable ({type(error).__name__}: {error})") from None
    except ValueError as error:
        raise NotRecorded(f"{not_yet}: the API at {url} answered something that is not JSON ({error})") from None
    if not outcome.accepted:
        raise NotRecorded(f"{not_yet}: the API refused it ({outcome.status_code} {outcome.body.get('code')}: "
                          f"{outcome.body.get('reason')})")
    return outcome.body["events"][-1]["chain_seq"]


async def export(settings: Settings, tenant: str, scope: dict[str, Any], out: Path, since_size: int | None,
                 url: str, progress: bool, say: Callable[[str], None]) -> Exported:
    written = await write(settings, tenant, scope, out, since_size, progress, say)
    try:
        return Exported(written, await record(settings, url, written))
    except NotRecorded as error:
        error.exported = Exported(written)
        raise
