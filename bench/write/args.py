"""The write benchmark's options and its three sizes."""
from __future__ import annotations

import argparse
from pathlib import Path

from bench.lib import cli

SIZES: cli.Sizes = {
    "full": {"commands": 50_000, "http_duration": 20.0, "http_warmup": 3.0, "http_projectors": "both",
             "http_layout": "both", "peer_db_functions": True,
             "batch_size": 1000, "batch_lanes": 6, "batch_rounds": 10, "batch_warmup": 2, "batch_layout": "both",
             "telemetry_rounds": 2},
    "quick": {"commands": 3_000, "http_duration": 5.0, "http_warmup": 1.0, "http_projectors": "both",
              "http_layout": "both", "peer_db_functions": True,
              "batch_size": 1000, "batch_lanes": 6, "batch_rounds": 4, "batch_warmup": 1, "batch_layout": "both",
              "telemetry_rounds": 1},
    # every phase once, one serve layout: under a minute on 2 cores with the stack already up
    "smoke": {"commands": 2_000, "http_duration": 3.0, "http_warmup": 1.0, "http_projectors": "off",
              "http_layout": "one", "peer_db_functions": False,
              "batch_size": 500, "batch_lanes": 1, "batch_rounds": 1, "batch_warmup": 0, "batch_layout": "one",
              "telemetry_rounds": 1},
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = cli.parser("python -m bench.write", "runledger write-path benchmark: processor, raw aiokafka, eventsourcing peer, HTTP latency")
    p.add_argument("--commands", type=int, help="commands in phase 1 (" + cli.size_help(SIZES, "commands") + ")")
    p.add_argument("--peer-commands", type=int, default=None, help="commands for the peer (default: --commands)")
    p.add_argument("--no-peer-db-functions", dest="peer_db_functions", action="store_false", default=None,
                   help="skip the peer's batch mode with POSTGRES_ENABLE_DB_FUNCTIONS=y")
    p.add_argument("--tenants", type=int, default=24)
    p.add_argument("--partitions", type=int, default=6)
    p.add_argument("--batch-max", type=int, default=1000, help="RUNLEDGER_BATCH_MAX for the processor")
    p.add_argument("--http-rate", type=float, default=200.0, help="commands/s, open loop")
    p.add_argument("--http-duration", type=float, help="measured seconds (" + cli.size_help(SIZES, "http_duration") + ")")
    p.add_argument("--http-warmup", type=float, help="unmeasured seconds first")
    p.add_argument("--http-client", choices=["raw", "httpx"], default="raw",
                   help="load generator client: bench/lib/rawhttp.py (a fraction of httpx's CPU) or httpx")
    p.add_argument("--http-projectors", choices=["off", "on", "both"], help="serve without projectors, with, or both")
    p.add_argument("--http-layout", choices=["one", "split", "both"],
                   help="one: API and processor in one `serve`; split: `serve --no-processor` + `serve --no-api`")
    p.add_argument("--no-http-floor", dest="http_floor", action="store_false",
                   help="skip the HTTP floor run (same load against bench/write/echo.py)")
    p.add_argument("--http-port", type=int, default=None, help="API port (default: a free one)")
    p.add_argument("--batch-size", type=int, help="commands per POST /v1/commands/batch in phase 6 ("
                   + cli.size_help(SIZES, "batch_size") + ")")
    p.add_argument("--batch-lanes", type=int, help="phase 6 clients, each a tenant of its own partition, one batch "
                   "in flight each (" + cli.size_help(SIZES, "batch_lanes") + ")")
    p.add_argument("--batch-rounds", type=int, help="measured batches per client (" + cli.size_help(SIZES, "batch_rounds") + ")")
    p.add_argument("--batch-warmup", type=int, help="unmeasured batches per client first")
    p.add_argument("--batch-layout", choices=["one", "split", "both"], help="phase 6 serve shapes, as --http-layout")
    p.add_argument("--telemetry", action="store_true",
                   help="add phase 7: processor events/s and HTTP p50/p99 with telemetry off vs exported over "
                        "OTLP (and vs the Prometheus page scraped every second), in this run")
    p.add_argument("--telemetry-rounds", type=int, help="phase 7 runs of each variant, in alternating order ("
                   + cli.size_help(SIZES, "telemetry_rounds") + ")")
    p.add_argument("--only", action="append", choices=["processor", "raw", "peer", "http", "batch", "telemetry"],
                   help="run only these phases (repeatable; raw needs processor's records)")
    p.add_argument("--profile", type=Path, default=None,
                   help="run the phase-1 processor under cProfile, save the stats here, print the top functions")
    p.add_argument("--serve-entry", default="infra.entry.cli",
                   help="module (or .py file) whose CLI `serve` starts the servers (A/B runs of a change)")
    p.add_argument("--profile-http", type=Path, default=None,
                   help="run phase 5's serve under cProfile; stats go to PATH-<mode>.prof")
    p.add_argument("--stall-s", type=float, default=60.0, help="error if no reply for this long")
    args = cli.sized(p.parse_args(argv), SIZES)
    args.peer_commands = args.peer_commands or args.commands
    args.phases = set(args.only or ["processor", "raw", "peer", "http", "batch"]) | ({"telemetry"} if args.telemetry else set())
    return args
