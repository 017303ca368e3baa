"""The Kafka broker and PostgreSQL a benchmark runs against: the ones it is given, or a stack of its own.

Given: --bootstrap / --database-url, or RUNLEDGER_KAFKA_BOOTSTRAP / RUNLEDGER_DATABASE_URL in the
environment; then nothing is started. Otherwise infra/local/stack.sh runs in the benchmark's own
home and on its own ports, whatever the caller's RUNLEDGER_* say, so it never touches a
developer's broker (19092) or PostgreSQL (15432):

  BENCH_HOME         stack state directory  (default /tmp/rlbench)
  BENCH_KAFKA_PORT   broker port            (default 39092; the KRaft controller uses port + 1)
  BENCH_PG_PORT      PostgreSQL port        (default 35432)
  BENCH_KEEP_STACK=1 leave a stack this started running afterwards

A stack already running in that home is reused and left running; one started here is stopped at
the end. RUNLEDGER_HOME (or --stack-home) names the stack whose broker and PostgreSQL CPU the
table reports apart.
"""
from __future__ import annotations

import os
import subprocess
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

from bench.lib.procs import ROOT

STACK_SH = ROOT / "infra" / "local" / "stack.sh"


@dataclass(frozen=True)
class Target:
    bootstrap: str
    database_url: str | None
    home: str | None  # the stack.sh home of that broker and PostgreSQL, if known


def own_stack_env() -> dict[str, str]:
    """stack.sh's environment for the benchmark's own home and ports."""
    kafka_port = int(os.environ.get("BENCH_KAFKA_PORT", "39092"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNLEDGER_")}
    env.update(RUNLEDGER_HOME=os.environ.get("BENCH_HOME", "/tmp/rlbench"),
               RUNLEDGER_KAFKA_PORT=str(kafka_port), RUNLEDGER_KAFKA_CONTROLLER_PORT=str(kafka_port + 1),
               RUNLEDGER_PG_PORT=os.environ.get("BENCH_PG_PORT", "35432"))
    return env


def stack(command: str, env: dict[str, str]) -> int:
    """Run `stack.sh COMMAND`, its output on stderr; return its exit status."""
    return subprocess.run(["bash", str(STACK_SH), command], env=env, stdout=sys.stderr).returncode


def own_target(env: dict[str, str]) -> Target:
    return Target(f"127.0.0.1:{env['RUNLEDGER_KAFKA_PORT']}",
                  f"postgresql://runledger:runledger@127.0.0.1:{env['RUNLEDGER_PG_PORT']}/runledger",
                  env["RUNLEDGER_HOME"])


@contextmanager
def target_for(bootstrap: str | None, database_url: str | None, home: str | None) -> Iterator[Target]:
    """Yield the broker and database to use, starting (and afterwards stopping) a stack if none is given."""
    bootstrap = bootstrap or os.environ.get("RUNLEDGER_KAFKA_BOOTSTRAP")
    if bootstrap:
        yield Target(bootstrap, database_url or os.environ.get("RUNLEDGER_DATABASE_URL"),
                     home or os.environ.get("RUNLEDGER_HOME"))
        return
    env = own_stack_env()
    if stack("status", env) == 0:
        print(f"bench: reusing the stack already running in {env['RUNLEDGER_HOME']} (left running)",
              file=sys.stderr)
        yield own_target(env)
        return
    if stack("up", env) != 0:
        raise RuntimeError(f"infra/local/stack.sh up failed in {env['RUNLEDGER_HOME']}")
    try:
        yield own_target(env)
    finally:
        if os.environ.get("BENCH_KEEP_STACK") != "1":
            print(f"bench: stopping the stack it started ({env['RUNLEDGER_HOME']})", file=sys.stderr)
            if stack("down", env) != 0:
                print("bench: WARNING: stack.sh down failed", file=sys.stderr)
