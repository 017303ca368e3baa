#!/usr/bin/env bash
# A local three-broker Apache Kafka cluster in KRaft mode, on loopback: three nodes, each a combined
# broker + controller (three voters), each with its own data directory, the same Kafka distribution
# fetch-kafka.sh caches and the same broker tuning as stack.sh's single node (kafka-lib.sh), but
# replicated: internal topics and topic defaults with replication factor 3 and min.insync.replicas 2.
# PostgreSQL is not part of it (stack.sh runs one). docs/scaling.md tells what runs on it.
#
# Usage: infra/local/cluster.sh up|down|status|env
#        infra/local/cluster.sh stop N|start N|kill N        (N = 1, 2 or 3)
#
#   up       fetch Kafka if not cached, start the nodes not running, wait until every node answers
#            metadata naming 3 brokers and the coordinators work (idempotent)
#   down     SIGTERM every node at once (one at a time, the last ones would wait for a quorum that is
#            gone), SIGKILL a node that has not ended within 30 s
#   status   report each node (stopped, not answering, or answering and how many brokers it sees); exit 0
#            only if all three answer and each sees 3 brokers
#   env      print the export line for KAFKA_BOOTSTRAP (all three listeners)
#   stop N   SIGTERM node N and wait until it has exited (a controlled shutdown)
#   kill N   SIGKILL node N (a crash) and wait until it is gone
#   start N  start node N on its data and wait until it answers and the cluster has 3 brokers again
#
# Environment (all optional):
#   RUNLEDGER_HOME                state dir; the cluster lives in $RUNLEDGER_HOME/cluster (default <repo>/.runledger-cluster)
#   RUNLEDGER_CLUSTER_BASE_PORT   node N listens on BASE+2(N-1), its controller on the port after (default 19192)
#   RUNLEDGER_CLUSTER_HEAP_OPTS   JVM heap per node (default "-Xms128m -Xmx512m")
#   RUNLEDGER_KAFKA_VERSION       Kafka version (default: see fetch-kafka.sh)
#   RUNLEDGER_UP_TIMEOUT          seconds to wait for readiness (default 120)
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/../.." && pwd)"
# shellcheck source=infra/local/kafka-lib.sh
source "$SCRIPT_DIR/kafka-lib.sh"

RUNLEDGER_HOME="${RUNLEDGER_HOME:-$REPO_ROOT/.runledger-cluster}"
CLUSTER_HOME="$RUNLEDGER_HOME/cluster"
BASE_PORT="${RUNLEDGER_CLUSTER_BASE_PORT:-19192}"
HEAP_OPTS="${RUNLEDGER_CLUSTER_HEAP_OPTS:--Xms128m -Xmx512m}"
UP_TIMEOUT="${RUNLEDGER_UP_TIMEOUT:-120}"
HOST=127.0.0.1
NODES=(1 2 3)

log() { printf 'cluster: %s\n' "$*"; }
die() { printf 'cluster: ERROR: %s\n' "$*" >&2; exit 1; }

broker_port() { echo $((BASE_PORT + 2 * ($1 - 1))); }
controller_port() { echo $((BASE_PORT + 2 * ($1 - 1) + 1)); }
node_dir() { echo "$CLUSTER_HOME/node-$1"; }
node_log() { echo "$CLUSTER_HOME/node-$1.log"; }
node_pidfile() { echo "$CLUSTER_HOME/node-$1.pid"; }
node_pid() { read_pid "$(node_pidfile "$1")"; }
node_running() { broker_alive "$(node_pidfile "$1")"; }

bootstrap() {
  local n parts=()
  for n in "${NODES[@]}"; do parts+=("$HOST:$(broker_port "$n")"); done
  (IFS=,; printf '%s' "${parts[*]}")
}

voters() {
  local n parts=()
  for n in "${NODES[@]}"; do parts+=("$n@$HOST:$(controller_port "$n")"); done
  (IFS=,; printf '%s' "${parts[*]}")
}

probe() {  # probe BOOTSTRAP [BROKERS [kafka_ready.py options]]: it answers, listing BROKERS (3) brokers
  local target="$1" want="${2:-3}" py
  shift $(($# < 2 ? $# : 2))
  py="$(ready_python)" || die "no python with aiokafka to probe the cluster (run infra/local/setup.sh)"
  "$py" "$SCRIPT_DIR/kafka_ready.py" "$target" --timeout 15 --brokers "$want" "$@"
}

write_config() {  # write_config N
  local n="$1" dir
  dir="$(node_dir "$n")"
  mkdir -p "$dir/data"
  {
    printf '# Written by infra/local/cluster.sh on every start; edits are overwritten.\n'
    printf '# Node %s of 3, KRaft, broker and controller in one process; the three controllers are the voters.\n' "$n"
    kafka_server_config "$n" "$(voters)" "$(broker_port "$n")" "$(controller_port "$n")" "$dir/data" 3 2
  } >"$dir/server.properties"
  kafka_write_log4j "$dir/log4j2.properties" cluster.sh "node-$n.log"
}

start_node() {  # start_node N: start it if it is not running (no wait)
  local n="$1" dir p
  dir="$(node_dir "$n")"
  if node_running "$n"; then log "node $n: already running (pid $(node_pid "$n"))"; return; fi
  rm -f "$(node_pidfile "$n")"
  for p in "$(broker_port "$n")" "$(controller_port "$n")"; do
    port_open "$p" && die "node $n: port $HOST:$p is already in use (set RUNLEDGER_CLUSTER_BASE_PORT)"
  done
  write_config "$n"
  kafka_java_opts "$HEAP_OPTS" "$dir/log4j2.properties" "$CLUSTER_HOME"
  [[ -f "$CLUSTER_HOME/cluster.id" ]] || die "no cluster in $CLUSTER_HOME: run '$0 up' first"
  kafka_format "$dir/server.properties" "$dir/data" "$(node_log "$n")" "$(cat "$CLUSTER_HOME/cluster.id")" "node $n"
  log "node $n: starting on $HOST:$(broker_port "$n") (controller $HOST:$(controller_port "$n"), log $(node_log "$n"))"
  printf '\n===== %s cluster.sh: starting node %s =====\n' "$(date -u +%FT%TZ)" "$n" >>"$(node_log "$n")"
  kafka_launch "$dir/server.properties" "$(node_log "$n")" "$(node_pidfile "$n")"
}

wait_ready() {  # wait_ready NODE... [-- probe options]: each node answers and sees 3 brokers
  local nodes=() opts=() out="" n deadline=$((SECONDS + UP_TIMEOUT))
  while (($#)); do if [[ "$1" == -- ]]; then shift; opts=("$@"); break; fi; nodes+=("$1"); shift; done
  for n in "${nodes[@]}"; do
    until port_open "$(broker_port "$n")" && out="$(probe "$HOST:$(broker_port "$n")" 2>&1)"; do
      node_running "$n" || { show_log_tail "$(node_log "$n")"; die "node $n exited during start-up; see $(node_log "$n")"; }
      (( SECONDS < deadline )) || { show_log_tail "$(node_log "$n")"; die "node $n not ready after ${UP_TIMEOUT}s (last probe: ${out:-port closed})"; }
      sleep 1
    done
    log "node $n: ready ($out)"
  done
  if ((${#opts[@]})); then
    until out="$(probe "$(bootstrap)" 3 "${opts[@]}" 2>&1)"; do
      (( SECONDS < deadline )) || die "cluster: coordinators not ready after ${UP_TIMEOUT}s (last probe: $out)"
      sleep 1
    done
    log "ready at $(bootstrap) ($out)"
  fi
}

libs() {
  "$SCRIPT_DIR/fetch-kafka.sh" >/dev/null
  KAFKA_LIBS="$("$SCRIPT_DIR/fetch-kafka.sh" --libs-dir)"
  command -v java >/dev/null 2>&1 || die "java not found (Kafka needs Java 17+)"
}

signal_node() {  # signal_node N SIGNAL: send it and wait until the process is gone
  local n="$1" sig="$2" pid deadline=$((SECONDS + 60))
  pid="$(node_pid "$n")"
  if ! node_running "$n"; then log "node $n: not running"; rm -f "$(node_pidfile "$n")"; return; fi
  log "node $n: sending SIG$sig to $pid"
  kill "-$sig" "$pid" 2>/dev/null || true
  while pid_alive "$pid" && (( SECONDS < deadline )); do sleep 0.2; done
  if pid_alive "$pid"; then log "node $n: still running after 60s; sending SIGKILL"; kill -KILL "$pid" 2>/dev/null || true; fi
  while pid_alive "$pid"; do sleep 0.1; done
  rm -f "$(node_pidfile "$n")"
}

cmd_down() {
  local n pid pids=() deadline=$((SECONDS + 30))
  for n in "${NODES[@]}"; do
    if node_running "$n"; then pid="$(node_pid "$n")"; pids+=("$pid"); log "node $n: sending SIGTERM to $pid"; kill -TERM "$pid" 2>/dev/null || true
    else log "node $n: not running"; fi
  done
  for pid in "${pids[@]}"; do
    while pid_alive "$pid" && (( SECONDS < deadline )); do sleep 0.2; done
    if pid_alive "$pid"; then log "broker $pid still running after 30s; sending SIGKILL"; kill -KILL "$pid" 2>/dev/null || true; fi
  done
  for pid in "${pids[@]}"; do while pid_alive "$pid"; do sleep 0.1; done; done
  kill_leftovers "kafka.Kafka $CLUSTER_HOME/node-" cluster  # a node of this home that lost its pid file
  for n in "${NODES[@]}"; do rm -f "$(node_pidfile "$n")"; done
}

node_arg() {
  [[ "${1:-}" =~ ^[123]$ ]] || die "node must be 1, 2 or 3, not '${1:-}'"
}

cmd_up() {
  mkdir -p "$CLUSTER_HOME"
  libs
  [[ -f "$CLUSTER_HOME/cluster.id" ]] || kafka_new_cluster_id >"$CLUSTER_HOME/cluster.id"
  local n start=$SECONDS
  for n in "${NODES[@]}"; do start_node "$n"; done
  wait_ready "${NODES[@]}" -- --warm-transactions
  log "up in $((SECONDS - start))s. For your shell: eval \"\$($0 env)\""
}

cmd_status() {  # each node: stopped, not answering, or answering (and how many brokers it sees)
  local n rc=0 out
  for n in "${NODES[@]}"; do
    if ! node_running "$n"; then log "node $n: stopped"; rc=1; continue; fi
    if out="$(probe "$HOST:$(broker_port "$n")" 1 2>&1)"; then
      log "node $n: running (pid $(node_pid "$n")) on $HOST:$(broker_port "$n"), answering ($out)"
      [[ "$out" == *" brokers=3 "* ]] || rc=1
    else
      log "node $n: running (pid $(node_pid "$n")) on $HOST:$(broker_port "$n"), NOT answering ($out)"; rc=1
    fi
  done
  return "$rc"
}

case "${1:-}" in
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  env) printf 'export KAFKA_BOOTSTRAP=%s\n' "$(bootstrap)" ;;
  stop) node_arg "${2:-}"; signal_node "$2" TERM ;;
  kill) node_arg "${2:-}"; signal_node "$2" KILL ;;
  start) node_arg "${2:-}"; libs; start_node "$2"; wait_ready "$2" ;;
  *) printf 'usage: %s up|down|status|env|stop N|start N|kill N\n' "$0" >&2; exit 2 ;;
esac
