"""`runledger export`: read a tenant's chain from Kafka, write an evidence bundle, record the export on the chain.

The bundle is written by schemas/bundle_write.py as the chain streams in (the scope's events to a spool, 32
bytes per other event), assembled as FILE.partial beside a work directory FILE.partial.d, and renamed to
FILE only when complete, so FILE is always a whole bundle. While the chain is read, the writer's state is
saved in FILE.partial.d every SAVE_EVERY_S seconds; a run that stopped while reading (killed, the broker
gone) leaves it there, and the next run of the same export resumes from the saved log offset. Anything
else left behind (another scope, no save yet, a failure after the read) is discarded and started over.

The export is a job on the chain, through the API with an auditor token minted from RUNLEDGER_JWT_SECRET:
once the chain is read and the scope has events up to a checkpoint (bad input is refused before, and
changes nothing), RequestExport opens it (`export_job.requested`; if that cannot be recorded, nothing is
exported); the bundle is written; RecordExport completes it with the bundle's digest (`export_job.completed`
and `export.recorded`, one command), or FailExport ends it saying what stopped it.
"""
from __future__ import annotations

import asyncio
import os
import shutil
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Awaitable, Callable

import httpx
from tqdm import tqdm
from uuid_utils.compat import uuid7

from infra.adapters.http.auth import mint
from infra.adapters.settings import Settings
from infra.entry.client import LedgerClient
from infra.entry.verify import tenant_records
from schemas.bundle_scope import describe
from schemas.bundle_write import BundleWriter, ChainBroken, Written
from schemas.envelope import iso

EXPORTER = "runledger-cli:export"
SAVE_EVERY_S = 5.0  # while reading the chain, the writer's state is saved this often, so a rerun resumes there


class NotRequested(Exception):
    """The export could not be opened as a job on the chain, so nothing is exported (exit 1)."""


class NotRecorded(Exception):
    """The bundle is written, but the API did not record the export (exit 1; the file is kept)."""

    exported: "Exported | None" = None


@dataclass(frozen=True)
class Exported:
    written: Written
    chain_seq: int | None = None
    job_id: str | None = None

    def summary(self) -> str:
        m, w = self.written.manifest, self.written
        cp, counts = m["checkpoint"], m["counts"]
        line = (f"exported {describe(m['scope'])} of tenant {m['tenant']}: {counts['scope_events']} events "
                f"(+{counts['governance_events']} governance) up to checkpoint size {cp['size']} "
                f"(chain_seq {cp['chain_seq']}) to {w.path} ({w.nbytes} bytes), sha256 {w.sha256}")
        if self.chain_seq is not None:
            line += f"; recorded as export.recorded at chain_seq {self.chain_seq} (job {self.job_id})"
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
                progress: bool, say: Callable[[str], None],
                begin: Callable[[dict[str, Any]], Awaitable[None]] | None = None) -> Written:
    """Stream the chain into a bundle at `out`, atomically (FILE.partial, then rename).

    `begin(checkpoint)` is awaited once the chain is read and the scope is known to have events up to a
    checkpoint (anything refused before it changed nothing), and before any part of the bundle is assembled.
    """
    partial, work = partial_paths(out)
    resumed = BundleWriter.resume(tenant, scope, work, since_size) if work.is_dir() else None
    if resumed is not None:
        writer, start = resumed
        discard(partial)
        say(f"resuming the unfinished export in {work} (an earlier run stopped while reading the chain) from "
            f"chain_seq {writer.head_seq + 1}, log offset {start}")
    else:
        if discard(partial, work):
            say(f"found an unfinished export at {partial} that cannot be resumed as asked (another scope, or it "
                f"stopped before its first save); discarding it and starting over")
        writer, start = BundleWriter(tenant, scope, work, since_size), 0
    resumable = True
    try:
        saved = time.monotonic()
        async for offset, env in tenant_records(settings, tenant, progress, start=start):
            writer.feed(env)
            if time.monotonic() - saved >= SAVE_EVERY_S:
                writer.save(offset + 1)
                saved = time.monotonic()
        resumable = False  # the whole chain is read: what follows is quick, and a failure starts over
        checkpoint, _ = writer.cut()
        if begin is not None:
            await begin(checkpoint)
        with tqdm(unit="ev", desc="writing events and proofs", disable=not progress) as bar:
            written = writer.finish(partial, iso(datetime.now(timezone.utc)), bar.update)
        os.replace(partial, out)
        fd = os.open(out.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        return Written(out, written.sha256, written.nbytes, written.manifest)
    except ChainBroken:
        resumable = False  # what was read does not link up: nothing of it is worth keeping
        raise
    finally:
        writer.close()
        discard(partial)
        if not resumable:
            discard(work)


class Recorder:
    """The export's job on the chain, through the API: requested, then completed (RecordExport) or failed."""

    def __init__(self, settings: Settings, url: str, tenant: str):
        self.url, self.job_id = url, str(uuid7())
        self.token = mint(settings.jwt_secret.get_secret_value(), tenant, EXPORTER, ["auditor"],
                          settings.jwt_audience, 600)

    async def send(self, body: dict[str, Any], key: str):
        async with httpx.AsyncClient(base_url=self.url, timeout=30) as http:
            return await LedgerClient(http, self.token).send(body, idempotency_key=key)

    async def attempt(self, body: dict[str, Any], key: str) -> tuple[Any, str | None]:
        """(outcome, None), or (None, why it could not be sent or was refused)."""
        try:
            outcome = await self.send(body, key)
        except httpx.HTTPError as error:
            return None, f"the API at {self.url} is unreachable ({type(error).__name__}: {error})"
        except ValueError as error:
            return None, f"the API at {self.url} answered something that is not JSON ({error})"
        if not outcome.accepted:
            return None, (f"the API refused it ({outcome.status_code} {outcome.body.get('code')}: "
                          f"{outcome.body.get('reason')})")
        return outcome, None

    async def request(self, scope: dict[str, Any], checkpoint: dict[str, Any]) -> None:
        body = {"type": "RequestExport", "job_id": self.job_id, "scope": scope, "checkpoint_size": checkpoint["size"]}
        _, why = await self.attempt(body, f"export-job-{self.job_id}")
        if why:
            raise NotRequested(f"nothing exported: the export could not be opened as a job on the chain, so it "
                               f"would not be audited: {why}")

    async def fail(self, code: str, error: BaseException) -> None:
        """Best effort: the job stays `requested` on the chain if even this cannot be sent."""
        body = {"type": "FailExport", "job_id": self.job_id, "code": code,
                "reason": f"{type(error).__name__}: {error}"[:1000]}
        await self.attempt(body, f"export-fail-{self.job_id}")

    async def record(self, written: Written) -> int:
        """RecordExport, completing the job; the chain_seq of the export.recorded event."""
        m = written.manifest
        body = {"type": "RecordExport", "job_id": self.job_id, "scope": m["scope"],
                "events": m["counts"]["scope_events"], "checkpoint_size": m["checkpoint"]["size"],
                "bundle_sha256": written.sha256}
        outcome, why = await self.attempt(body, f"export-{written.sha256}")
        if why:
            raise NotRecorded(f"the bundle is written to {written.path} (sha256 {written.sha256}), but the export is "
                              f"not yet recorded: {why}")
        return outcome.body["events"][-1]["chain_seq"]


async def export(settings: Settings, tenant: str, scope: dict[str, Any], out: Path, since_size: int | None,
                 url: str, progress: bool, say: Callable[[str], None]) -> Exported:
    """Read the chain, open the job, write the bundle, record it: each step only once the one before held."""
    recorder, opened = Recorder(settings, url, tenant), False

    async def begin(checkpoint: dict[str, Any]) -> None:
        nonlocal opened
        await recorder.request(scope, checkpoint)
        opened = True
    try:
        written = await write(settings, tenant, scope, out, since_size, progress, say, begin)
    except BaseException as error:
        if opened:  # the job is on the chain: end it, saying what stopped it
            code = "interrupted" if isinstance(error, (KeyboardInterrupt, asyncio.CancelledError)) else "write_failed"
            await recorder.fail(code, error)
        raise
    try:
        return Exported(written, await recorder.record(written), recorder.job_id)
    except NotRecorded as error:
        error.exported = Exported(written, job_id=recorder.job_id)
        raise
