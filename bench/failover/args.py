"""The failover benchmark's options, sizes and target."""
from __future__ import annotations

import argparse

from bench.lib import cli

SIZES: cli.Sizes = {
    "full": {"kills": 8, "partitions": 6, "rate": 10.0, "rebuild_sizes": "1000,100000,1000000"},
    "quick": {"kills": 4, "partitions": 4, "rate": 10.0, "rebuild_sizes": "1000,100000"},
    # one kill and the smallest rebuild: every phase once (the test suite's size)
    "smoke": {"kills": 1, "partitions": 2, "rate": 5.0, "rebuild_sizes": "1000"},
}
TARGET_S = 5.0  # issue 15: a successor accepts the killed owner's partitions within 5 s on this machine
PHASES = ("kills", "rebuild")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = cli.parser("python -m bench.failover", "runledger failover benchmark: SIGKILL a partition's owner, "
                   "time until a successor accepts (detection, fencing, rebuild, first accept); rebuild vs log size")
    p.add_argument("--kills", type=int, help="SIGKILLs of an owner, one at a time (" +
                   cli.size_help(SIZES, "kills") + ")")
    p.add_argument("--partitions", type=int, help="command partitions (" + cli.size_help(SIZES, "partitions") + ")")
    p.add_argument("--rate", type=float, help="commands/s sent to each partition, one tenant each (" +
                   cli.size_help(SIZES, "rate") + ")")
    p.add_argument("--session-timeout-ms", type=int, default=None,
                   help="RUNLEDGER_SESSION_TIMEOUT_MS of the processors (default: the product's)")
    p.add_argument("--snapshot-every", type=int, default=None,
                   help="RUNLEDGER_SNAPSHOT_EVERY of the processors (default: the product's; 0: no snapshots)")
    p.add_argument("--settle-s", type=float, default=3.0, help="steady seconds before each kill")
    p.add_argument("--give-up-s", type=float, default=60.0, help="a partition not accepting this long after a "
                   "kill is reported as never")
    p.add_argument("--rebuild-sizes", help="events per partition the rebuild phase prefills, comma-separated (" +
                   cli.size_help(SIZES, "rebuild_sizes") + ")")
    p.add_argument("--only", default=",".join(PHASES), help="phases to run: " + ", ".join(PHASES))
    args = cli.sized(p.parse_args(argv), SIZES)
    args.only = {o.strip() for o in args.only.split(",") if o.strip()}
    args.rebuild_sizes = [int(n) for n in str(args.rebuild_sizes).split(",") if n.strip()]
    if not args.only <= set(PHASES):
        p.error("--only takes " + ", ".join(PHASES))
    if args.kills < 1 or args.partitions < 2 or args.rate <= 0:
        p.error("--kills >= 1, --partitions >= 2 (two processors share them) and --rate > 0")
    return args
