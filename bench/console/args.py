"""The console benchmark's options and its three sizes."""
from __future__ import annotations

import argparse

from bench.lib import cli

SIZES: cli.Sizes = {
    # the streams benchmark's --quick load (docs/bench-streams.md), held while the console is measured
    "full": {"subscribers": 1_000, "rate": 20.0, "renders": 20, "clicks": 20, "updates": 1_000,
             "update_rate": 10.0, "client_procs": 2},
    "quick": {"subscribers": 1_000, "rate": 20.0, "renders": 5, "clicks": 5, "updates": 200,
              "update_rate": 10.0, "client_procs": 1},
    # every measurement once or twice, under a small load: well under a minute with the stack up
    "smoke": {"subscribers": 50, "rate": 10.0, "renders": 2, "clicks": 2, "updates": 20,
              "update_rate": 10.0, "client_procs": 1},
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = cli.parser("python -m bench.console", "runledger console benchmark: first render and live update, "
                                              "idle and under the SSE streams benchmark's load")
    p.add_argument("--subscribers", type=int, help="load: SSE subscribers of one tenant's stream (" +
                   cli.size_help(SIZES, "subscribers") + ")")
    p.add_argument("--rate", type=float, help="load: RequestRun commands/s to that tenant (" +
                   cli.size_help(SIZES, "rate") + ")")
    p.add_argument("--client-procs", type=int, help="client processes the subscribers are split over")
    p.add_argument("--connect-concurrency", type=int, default=100, help="connects in flight per client process")
    p.add_argument("--renders", type=int, help="reloads timed to first render, per condition (" +
                   cli.size_help(SIZES, "renders") + ")")
    p.add_argument("--clicks", type=int, help="approvals confirmed in the page, per condition (" +
                   cli.size_help(SIZES, "clicks") + ")")
    p.add_argument("--updates", type=int, help="StartStep commands timed into the open timeline, per condition (" +
                   cli.size_help(SIZES, "updates") + ")")
    p.add_argument("--update-rate", type=float, help="StartStep commands/s of that measurement")
    p.add_argument("--sample-timeout", type=float, default=60.0,
                   help="seconds a sample may wait for the page before it counts as never updated")
    p.add_argument("--start-timeout", type=float, default=120.0)
    p.add_argument("--partitions", type=int, default=3)
    p.add_argument("--serve-entry", default="infra.entry.cli",
                   help="module (or .py file) started as `python -m MODULE serve` (A/B runs of a change)")
    args = cli.sized(p.parse_args(argv), SIZES)
    # what bench/streams/server.py reads of the streams benchmark's options
    args.layout, args.profile, args.replay_events = "one", None, 0
    return args
