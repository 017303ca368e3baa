"""The Kafka client benchmark's options and its three sizes."""
from __future__ import annotations

import argparse

from bench.lib import cli

CLIENTS = ("aiokafka", "confluent-kafka")  # the latter at two retry.backoff.ms
SIZES: cli.Sizes = {
    "full": {"duration": 6.0, "commands": 300_000, "raw_records": 200_000, "idle_s": 5.0},
    "quick": {"duration": 3.0, "commands": 100_000, "raw_records": 100_000, "idle_s": 3.0},
    "smoke": {"duration": 1.0, "commands": 5_000, "raw_records": 5_000, "idle_s": 1.0},
}


def batches(text: str) -> list[int]:
    return [int(b) for b in text.split(",") if b.strip()]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = cli.parser("python -m bench.kafka",
                   "runledger Kafka client benchmark: the processor's transactional path, aiokafka vs confluent-kafka")
    p.add_argument("--batches", type=batches, default=[1, 10, 100, 1000], help="commands per transaction (1,10,100,1000)")
    p.add_argument("--duration", type=float, help="measured seconds per cell (" + cli.size_help(SIZES, "duration") + ")")
    p.add_argument("--commands", type=int, help="commands pre-produced, read by every cell from offset 0 ("
                   + cli.size_help(SIZES, "commands") + ")")
    p.add_argument("--raw-records", type=int, help="records per client in the raw produce baseline ("
                   + cli.size_help(SIZES, "raw_records") + ")")
    p.add_argument("--idle-s", type=float, help="seconds the broker's idle CPU is measured first (subtracted per transaction)")
    p.add_argument("--linger-ms", type=int, default=0, help="transactional producers' linger (the processor's: 0)")
    p.add_argument("--rd-retry-backoff-ms", type=int, default=5,
                   help="confluent-kafka's retry.backoff.ms (5; the run also measures its default, 100)")
    p.add_argument("--count-requests", action="store_true",
                   help="count the broker's requests per transaction by API (request logger at TRACE; slows the "
                        "broker, so its rates are not the run's numbers). Needs --stack-home of a broker of your own")
    p.add_argument("--clients", choices=CLIENTS, action="append", help="only these clients (repeatable)")
    args = cli.sized(p.parse_args(argv), SIZES)
    args.clients = args.clients or list(CLIENTS)
    if args.count_requests and (not args.stack_home or (args.bootstrap or "").endswith(":19092")):
        p.error("--count-requests changes the broker's log level: only on a broker of your own (with --stack-home)")
    return args
