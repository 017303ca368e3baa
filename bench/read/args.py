"""The read benchmark's options and its three sizes."""
from __future__ import annotations

import argparse

from bench.lib import cli

SIZES: cli.Sizes = {
    "full": {"events": 200_000, "duration": 30.0, "warmup": 5.0, "low_rates": "250,1000", "rate": 5000.0},
    "quick": {"events": 20_000, "duration": 10.0, "warmup": 3.0, "low_rates": "250,1000", "rate": 5000.0},
    # every phase once, one steady rate: under a minute on 2 cores with the stack already up
    "smoke": {"events": 3_000, "duration": 3.0, "warmup": 1.0, "low_rates": "", "rate": 250.0},
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = cli.parser("python -m bench.read", "runledger read-path benchmark: projector catch-up, rebuild, steady lag")
    p.add_argument("--events", type=int, help="events to prefill, at least (" + cli.size_help(SIZES, "events") + ")")
    p.add_argument("--tenants", type=int, default=48)
    p.add_argument("--partitions", type=int, default=6)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--rate", type=float, help="steady-state target, events/s appended")
    p.add_argument("--low-rates", help="lower steady rates run first, comma-separated ('' to skip)")
    p.add_argument("--duration", type=float, help="measured seconds per steady rate (" + cli.size_help(SIZES, "duration") + ")")
    p.add_argument("--warmup", type=float, help="unmeasured seconds before each window")
    p.add_argument("--probe-ms", type=float, default=25.0, help="end-to-end probe poll interval (PostgreSQL)")
    p.add_argument("--ch-observe", choices=["watch", "poll"], default="watch",
                   help="ClickHouse positions and probe heads: noted in-process as each poll is stored (watch: "
                        "on_applied and Kafka's committed offsets), or read from chdb (poll; competes for its lock)")
    p.add_argument("--ch-probe-every", type=int, default=2, help="with --ch-observe poll: every N-th probe tick")
    p.add_argument("--py-spy", default=None, help="path to a py-spy binary: sample this process in each steady window")
    p.add_argument("--py-spy-hz", type=int, default=25, help="py-spy samples per second (it costs CPU too)")
    p.add_argument("--no-steady", dest="steady", action="store_false")
    p.add_argument("--profile", action="store_true", help="profile the --profile-names catch-ups even if met")
    p.add_argument("--profile-names", default="runs,audit", help="projectors to profile when their target is missed")
    p.add_argument("--no-profile-on-miss", dest="profile_on_miss", action="store_false", default=None)
    p.add_argument("--profile-dir", default=None, help="also write the .prof files here")
    p.add_argument("--catch-up-timeout", type=float, default=900.0)
    p.add_argument("--drain-timeout", type=float, default=180.0)
    p.add_argument("--stall-s", type=float, default=60.0)
    args = cli.sized(p.parse_args(argv), SIZES)
    if args.profile_on_miss is None:
        args.profile_on_miss = args.size != "smoke"
    args.low_rates = [float(r) for r in args.low_rates.split(",") if r.strip()]
    args.profile_names = [n.strip() for n in args.profile_names.split(",") if n.strip()]
    return args
