#!/usr/bin/env bash
# runledger benchmarks: the write path (docs/bench.md), the read path (docs/bench-read.md),
# SSE streams (docs/bench-streams.md) and evidence (Merkle trees, proofs, checkpoints:
# bench/evidence/README.md). Each prints one table of measured vs target, next to baselines
# measured in the same run.
#
# Also: kafka (aiokafka against confluent-kafka on the transactional path, and the broker's CPU:
# docs/bench-kafka.md), console (the console's first render and live update under the SSE load:
# docs/console.md), failover (a processor SIGKILLed under load until its successor accepts, and
# rebuild time against log size: docs/bench-failover.md), cluster (events/s with one and two processors
# on a three-broker cluster of its own, infra/local/cluster.sh: docs/scaling.md).
#
# Usage: bench/run.sh [write|read|streams|evidence|policy|kafka|console|failover|cluster] [that benchmark's options...]
#        e.g. bench/run.sh --quick, bench/run.sh read --quick, bench/run.sh streams --help
#        (no benchmark named = write). The same as `python -m bench.<name> ...` from the repo root.
#        evidence and policy (Cedar evaluation per tool call, bench/policy/README.md) need no broker
#        or database and start no stack; `policy --http` adds RequestToolCall latency through HTTP
#        with and without policy evaluation, which needs the stack like write/read/streams.
#
# Without RUNLEDGER_KAFKA_BOOTSTRAP in the environment, the benchmark starts its own local stack
# (infra/local/stack.sh: Kafka + PostgreSQL) in its own home and on its own ports, so it never
# touches a developer's broker, and stops it again if it was the one that started it. With
# RUNLEDGER_KAFKA_BOOTSTRAP set, it uses that broker (and RUNLEDGER_DATABASE_URL) and starts nothing.
#
# Environment (all optional; bench/lib/stack.py):
#   BENCH_HOME                 stack state directory    (default /tmp/rlbench)
#   BENCH_KAFKA_PORT           broker port              (default 39092; controller = port + 1)
#   BENCH_PG_PORT              PostgreSQL port          (default 35432)
#   BENCH_KEEP_STACK=1         leave a stack it started running afterwards
#   PYTHON                     interpreter              (default <repo>/.venv/bin/python)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
case "${1:-}" in
  write | read | streams | evidence | policy | kafka | console | failover | cluster) NAME="$1"; shift ;;
  *) NAME=write ;;
esac
cd "$ROOT"
exec "$PY" -m "bench.$NAME" "$@"
