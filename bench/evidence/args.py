"""The evidence benchmark's options, sizes and targets."""
from __future__ import annotations

import argparse
from pathlib import Path

from bench.lib import cli

SIZES: cli.Sizes = {
    "full": {"events": 1_000_000, "duration": 3.0, "samples": 1_000, "bundle_events": 100_000},
    "quick": {"events": 200_000, "duration": 2.0, "samples": 500, "bundle_events": 20_000},
    # every phase once; its windows are too short to measure on purpose (the test suite's size)
    "smoke": {"events": 20_000, "duration": 0.2, "samples": 100, "bundle_events": 1_000},
}
PHASES = ("compact", "store", "inclusion", "consistency", "checkpoint", "bundles")

# Ours, not the (it sets none): the evidence work must stay a small share of one core beside the
# write path (docs/bench.md: a few thousand events/s per processor). Appending at >= 50,000 events/s is
# under a tenth of a core at 5,000 events/s; a root per checkpoint, a proof per exported event and a
# signature per checkpoint (every N events or T seconds) are far rarer than events.
# An export or an offline verification of a whole tenant is a job: at >= 5,000 events/s a chain of a
# million events takes under 4 minutes either way, well inside an auditor's request.
TARGETS = {"append": 50_000, "root": 10_000, "prove": 1_000, "verify": 1_000, "sign": 200, "open": 200,
           "export": 5_000, "verify_bundle": 5_000}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.evidence",
                                description="runledger evidence benchmark: Merkle trees, proofs, checkpoints")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="a smaller run (explicit flags still win)")
    size.add_argument("--smoke", action="store_true", help="the smallest run: every phase, windows too short")
    p.add_argument("--events", type=int, help="leaves in the tree (" + cli.size_help(SIZES, "events") + ")")
    p.add_argument("--duration", type=float, help="seconds of each timed window (" +
                   cli.size_help(SIZES, "duration") + ")")
    p.add_argument("--samples", type=int, help="distinct leaf indices / old sizes the proofs are drawn from (" +
                   cli.size_help(SIZES, "samples") + ")")
    p.add_argument("--bundle-events", type=int, help="events in the domain chain the bundle phases export "
                   "and verify (" + cli.size_help(SIZES, "bundle_events") + "; at most --events)")
    p.add_argument("--checkpoint-every", type=int, default=1_000, help="a signed checkpoint every N events "
                   "of that chain (default 1,000)")
    p.add_argument("--seed", type=int, default=1, help="random seed of the sampled indices")
    p.add_argument("--only", default=",".join(PHASES), help="phases to run: " + ", ".join(PHASES))
    p.add_argument("--json", type=Path, default=None, help="also write every number here")
    p.add_argument("--progress", dest="progress", action="store_true", default=None,
                   help="accepted for the shared command line; this benchmark logs its phases on stderr")
    p.add_argument("--no-progress", dest="progress", action="store_false")
    args = cli.sized(p.parse_args(argv), SIZES)
    args.only = {o.strip() for o in args.only.split(",") if o.strip()}
    if not args.only <= set(PHASES):
        p.error("--only takes " + ", ".join(PHASES))
    if args.events < 2 or args.samples < 1 or args.duration <= 0:
        p.error("--events >= 2, --samples >= 1 and --duration > 0")
    if args.bundle_events < 5 or args.checkpoint_every < 1:
        p.error("--bundle-events >= 5 (a run is five events) and --checkpoint-every >= 1")
    return args
