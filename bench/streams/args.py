"""The streams benchmark's options and its three sizes."""
from __future__ import annotations

import argparse

from bench.lib import cli

SIZES: cli.Sizes = {
    "full": {"subscribers": 10_000, "duration": 20.0, "baseline_duration": 10.0, "replay_events": 100_000,
             "replay_runs": 3, "rates": "1,20", "client_procs": 2},
    "quick": {"subscribers": 1_000, "duration": 10.0, "baseline_duration": 5.0, "replay_events": 20_000,
              "replay_runs": 2, "rates": "1,20", "client_procs": 2},
    # both phases once, one rate: under a minute on 2 cores with the stack already up
    "smoke": {"subscribers": 100, "duration": 3.0, "baseline_duration": 2.0, "replay_events": 2_000,
              "replay_runs": 1, "rates": "20", "client_procs": 1},
}
PHASES = {"replay", "fanout"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = cli.parser("python -m bench.streams", "runledger SSE streams benchmark: fan-out and replay")
    p.add_argument("--subscribers", type=int, help="fan-out subscribers (" + cli.size_help(SIZES, "subscribers") + ")")
    p.add_argument("--client-procs", type=int, help="client processes the subscribers are split over")
    p.add_argument("--connect-concurrency", type=int, default=100, help="connects in flight per client process")
    p.add_argument("--rates", help="comma-separated commands/s, one measured window each, ascending (" +
                   cli.size_help(SIZES, "rates") + ")")
    p.add_argument("--duration", type=float, help="seconds per rate (" + cli.size_help(SIZES, "duration") + ")")
    p.add_argument("--baseline-duration", type=float,
                   help="seconds of the highest rate with one subscriber before the fan-out (0: skip)")
    p.add_argument("--drain-timeout", type=float, default=300.0,
                   help="after the last command, wait at most this long for every subscriber to get everything")
    p.add_argument("--replay-events", type=int, help="events pre-filled for the replay (" +
                   cli.size_help(SIZES, "replay_events") + ")")
    p.add_argument("--replay-runs", type=int, help="timed replays")
    p.add_argument("--replay-timeout", type=float, default=300.0)
    p.add_argument("--prefill-timeout", type=float, default=1800.0)
    p.add_argument("--start-timeout", type=float, default=120.0)
    p.add_argument("--only", default="replay,fanout", help="phases to run: replay, fanout")
    p.add_argument("--layout", choices=("one", "split"), default="one",
                   help="one: a single `serve`; split: `serve --no-processor --no-projectors` plus `serve --no-api`")
    p.add_argument("--partitions", type=int, default=3)
    p.add_argument("--profile", default=None, help="profile the API server in each measured window: FILE.1, FILE.2, …")
    p.add_argument("--profile-top", type=int, default=25)
    p.add_argument("--serve-entry", default="infra.entry.cli",
                   help="module (or .py file) started as `python -m MODULE serve` (A/B runs of a change)")
    args = cli.sized(p.parse_args(argv), SIZES)
    args.rates = [float(r) for r in args.rates.split(",") if r.strip()]
    args.only = {o.strip() for o in args.only.split(",") if o.strip()}
    if not args.only <= PHASES:
        p.error("--only takes replay and/or fanout")
    return args
