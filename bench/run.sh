#!/usr/bin/env bash
# runledger benchmarks: the write path (docs/bench.md), the read path (docs/bench-read.md) and
# SSE streams (docs/bench-streams.md). Each prints one table of measured vs target, next to
# baselines measured in the same run.
#
# Usage: bench/run.sh [write|read|streams] [that benchmark's options...]
#        e.g. bench/run.sh --quick, bench/run.sh read --quick, bench/run.sh streams --help
#        (no benchmark named = write)
#
# Without RUNLEDGER_KAFKA_BOOTSTRAP in the environment, this starts its own local stack
# (infra/local/stack.sh: Kafka + PostgreSQL) in its own home and on its own ports, so it never
# touches a developer's broker, runs the benchmark against it, and stops the stack again if it
# was this script that started it. With RUNLEDGER_KAFKA_BOOTSTRAP set, it uses that broker (and
# RUNLEDGER_DATABASE_URL, if set, for the phases that need PostgreSQL) and starts nothing.
#
# Environment (all optional):
#   BENCH_HOME                 stack state directory    (default /tmp/rlbench)
#   BENCH_KAFKA_PORT           broker port              (default 39092; controller = port + 1)
#   BENCH_PG_PORT              PostgreSQL port          (default 35432)
#   BENCH_KEEP_STACK=1         leave a stack this script started running afterwards
#   PYTHON                     interpreter              (default <repo>/.venv/bin/python)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
case "${1:-}" in
  write) SCRIPT=write_path.py; shift ;;
  read) SCRIPT=read_path.py; shift ;;
  streams) SCRIPT=streams.py; shift ;;
  *) SCRIPT=write_path.py ;;
esac

started=0
stack() { bash "$ROOT/infra/local/stack.sh" "$@"; }
stop_stack() {
  if [[ $started == 1 && "${BENCH_KEEP_STACK:-0}" != 1 ]]; then
    echo "bench: stopping the stack it started ($RUNLEDGER_HOME)" >&2
    stack down >&2 || echo "bench: WARNING: stack.sh down failed" >&2
  fi
}

if [[ -z "${RUNLEDGER_KAFKA_BOOTSTRAP:-}" ]]; then
  # Its own home and ports, whatever the caller's RUNLEDGER_* say.
  export RUNLEDGER_HOME="${BENCH_HOME:-/tmp/rlbench}"
  export RUNLEDGER_KAFKA_PORT="${BENCH_KAFKA_PORT:-39092}"
  export RUNLEDGER_KAFKA_CONTROLLER_PORT="$((RUNLEDGER_KAFKA_PORT + 1))"
  export RUNLEDGER_PG_PORT="${BENCH_PG_PORT:-35432}"
  if stack status >/dev/null 2>&1; then
    echo "bench: reusing the stack already running in $RUNLEDGER_HOME (left running)" >&2
  else
    # If only one of the two services was up, 'up' starts the other and 'down' stops both.
    trap stop_stack EXIT
    started=1
    stack up >&2
  fi
  export RUNLEDGER_KAFKA_BOOTSTRAP="127.0.0.1:$RUNLEDGER_KAFKA_PORT"
  export RUNLEDGER_DATABASE_URL="postgresql://runledger:runledger@127.0.0.1:$RUNLEDGER_PG_PORT/runledger"
fi

cd "$ROOT"
"$PY" "$HERE/$SCRIPT" --bootstrap "$RUNLEDGER_KAFKA_BOOTSTRAP" "$@"
