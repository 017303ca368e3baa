"""The evidence benchmark's run (bench/evidence/README.md): the phases in order, one table."""
from __future__ import annotations

import traceback
from datetime import datetime, timezone

from bench.evidence.args import PHASES, TARGETS, parse_args
from bench.evidence.bundles import bundles
from bench.evidence.checkpoint import checkpoint
from bench.evidence.trees import Tree, compact, consistency, event_hashes, inclusion, store
from bench.lib import cli, host
from bench.lib.report import Report

log = cli.logger("bench evidence")
RUN = {"compact": compact, "store": store, "inclusion": inclusion, "consistency": consistency,
       "checkpoint": checkpoint, "bundles": bundles}


def run(args) -> Report:
    report = Report()
    if note := host.busy_note():
        report.notes.append(note)
    log(f"making {args.events:,} event hashes")
    tree = Tree(event_hashes(args.events))
    for name in PHASES:
        if name not in args.only:
            continue
        log(f"phase {name}")
        try:
            RUN[name](tree, args, report)
        except Exception as error:  # noqa: BLE001 - reported; exit status 1
            report.errors.append(f"phase {name} failed: {error!r}")
            traceback.print_exc()
    report.notes.append("targets are this benchmark's own (bench/evidence/args.py TARGETS): "
                        + ", ".join(f"{k} ≥ {v:,}/s" for k, v in TARGETS.items()))
    report.notes.append("one process, one thread: µs per operation include Python's call overhead; "
                        "'of a core' is this process's CPU time over the window's wall time")
    return report


def describe(args) -> str:
    return (f"size {args.size}: a tree of {args.events:,} events, windows of {args.duration:g} s, "
            f"{args.samples:,} sampled indices and old sizes, seed {args.seed}; bundles of a domain chain of "
            f"{min(args.events, args.bundle_events):,} events, a checkpoint every {args.checkpoint_every:,}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started, load_before = datetime.now(timezone.utc), host.load_text()
    report = run(args)
    cli.print_report("runledger evidence (Merkle trees, proofs, checkpoints)", started, load_before, report,
                     describe(args))
    if args.json:
        report.write_json(args.json, started=started.isoformat(), machine=host.machine(), code=host.git_state(),
                          args={k: str(v) for k, v in vars(args).items()})
    return 1 if report.errors else 0
