"""Phases 6–7: write an evidence bundle from a real domain chain, and verify it offline.

The chain is made by the domain itself (domain/ledger.py TenantLedger, as the processor decides): runs of
five events each (requested, started, a step started and finished, succeeded), with a signed checkpoint
every `--checkpoint-every` events, so the bundle holds real envelopes, proofs and checkpoints. No broker,
no database: what is timed is the writer (schemas/bundle_write.py) and the verifier (schemas/bundle.py),
which is what an export job and an outside auditor spend beyond reading the log.
"""
from __future__ import annotations

import shutil
import tempfile
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

from bench.evidence.args import TARGETS
from bench.evidence.timing import Timed, rate_row
from bench.lib.measure import Window
from bench.lib.report import Report
from domain.evidence import CheckpointSigner, checkpoint_command
from domain.ledger import TenantLedger
from schemas.bundle import verify_bundle
from schemas.bundle_write import write_bundle
from schemas.notes import Verifier

TENANT, AT = "bench", "2026-12-01T00:00:00.000000Z"
OPERATOR = {"subject": "bench-agent", "roles": ["operator"]}


def domain_chain(events: int, checkpoint_every: int) -> tuple[list[dict], str, str]:
    """About `events` envelopes decided by the domain, checkpointed; (chain, one run's id, the vkey)."""
    ledger = TenantLedger(TENANT)
    ledger.signer = CheckpointSigner("bench", bytes(range(32)))
    now, chain, runs = datetime(2026, 12, 1, tzinfo=timezone.utc), [], []

    def send(body: dict, actor: dict = OPERATOR, command: dict | None = None) -> dict:
        command = command or {"command_id": str(uuid.uuid4()), "tenant_id": TENANT, "idempotency_key": None,
                              "request_digest": "bench", "actor": actor, "body": body}
        reply, envelopes = ledger.execute(command, now)
        if reply["status"] != "accepted":
            raise RuntimeError(f"the benchmark's own command was refused: {reply}")
        chain.extend(envelopes)
        return reply

    while len(chain) < events:
        run = send({"type": "RequestRun", "agent_id": "bench"})["aggregate_id"]
        runs.append(run)
        send({"type": "StartRun", "run_id": run})
        step = send({"type": "StartStep", "run_id": run, "kind": "llm", "name": "plan"})["aggregate_id"]
        send({"type": "FinishStep", "run_id": run, "step_id": step, "outcome": "succeeded"})
        send({"type": "CompleteRun", "run_id": run})
        now += timedelta(milliseconds=1)
        if ledger.unsigned >= checkpoint_every:
            send({}, command=checkpoint_command(TENANT, AT))
    if ledger.unsigned:
        send({}, command=checkpoint_command(TENANT, AT))
    key = next(e["payload"]["key"] for e in chain if e["type"] == "checkpoint.signed")
    return chain, runs[len(runs) // 2], key


def repeat(work, duration: float, count: int, unit: str) -> Timed:
    """Run `work` (one whole export or verification of `count` events) until `duration` has passed."""
    done, cpu0, start = 0, time.process_time(), time.perf_counter()
    while True:
        work()
        done += count
        elapsed = time.perf_counter() - start
        if elapsed >= duration:
            return Timed(Window(done, elapsed, unit), time.process_time() - cpu0)


def bundles(tree, args, report: Report) -> None:
    """Both phases share one chain and one bundle: made once, here."""
    events = min(args.events, args.bundle_events)
    started = time.perf_counter()
    chain, run, vkey = domain_chain(events, args.checkpoint_every)
    checkpoints = sum(e["type"] == "checkpoint.signed" for e in chain)
    report.info("6 export", "the chain (decided by the domain, not timed)",
                f"{len(chain):,} events of {len(chain) // 5:,} runs, {checkpoints:,} signed checkpoints, made in "
                f"{time.perf_counter() - started:.1f} s")
    work = Path(tempfile.mkdtemp(prefix="bench-evidence-"))
    try:
        out = work / "tenant.bundle"

        def export_tenant() -> None:
            write_bundle(chain, TENANT, {"kind": "tenant"}, out, work / "spool", AT)
        export_tenant()
        report.info("6 export", "a whole-tenant bundle", f"{out.stat().st_size:,} bytes for {len(chain):,} events "
                                                          f"({out.stat().st_size / len(chain):,.0f} bytes per event)")
        rate_row(report, "6 export", f"whole tenant: events written (canonical JSON + inclusion proof each)",
                 repeat(export_tenant, args.duration, len(chain), "events"), "event", TARGETS["export"])
        run_out = work / "run.bundle"
        written = write_bundle(chain, TENANT, {"kind": "run", "id": run}, run_out, work / "spool-run", AT)
        rate_row(report, "6 export", f"one run ({written.scope_events} events) out of {len(chain):,}: chain events "
                                     "read per second (each hashed into the tree, 32 bytes kept)",
                 repeat(lambda: write_bundle(chain, TENANT, {"kind": "run", "id": run}, run_out, work / "spool-run",
                                             AT), args.duration, len(chain), "events"), "event", TARGETS["export"])

        key = Verifier.from_vkey(vkey)
        failures: list[str] = []

        def verify() -> None:
            result = verify_bundle(out, key)
            if not result.ok:
                failures.extend(result.problems[:3])
        verify()
        if failures:
            report.errors.append(f"the benchmark's own bundle does not verify: {failures}")
            return
        rate_row(report, "7 verify", "whole tenant, offline: events re-hashed, linked and proved, checkpoints opened",
                 repeat(verify, args.duration, len(chain), "events"), "event", TARGETS["verify_bundle"])
        if failures:
            report.errors.append(f"{len(failures)} verifications failed in the timed window: {failures[:3]}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
