#!/usr/bin/env bash
# Local runledger stack without Docker: Apache Kafka (single-node KRaft, the real broker
# fetched from Maven Central by fetch-kafka.sh) and PostgreSQL (Debian's packages) in
# data directories under $RUNLEDGER_HOME. ClickHouse is chdb, in-process: nothing to run.
#
# Usage: infra/local/stack.sh up|down|status|env
#
#   up      install PostgreSQL if missing, fetch Kafka if not cached, start both, wait
#           until both are really ready (idempotent: running services are left running)
#   down    stop both cleanly, then kill leftovers
#   status  report each service; exit 0 only if both are up
#   env     print the export lines for KAFKA_BOOTSTRAP and DATABASE_URL
#
# Environment (all optional):
#   RUNLEDGER_HOME                 state dir (default <repo>/.runledger)
#   RUNLEDGER_KAFKA_PORT           broker listener port      (default 19092)
#   RUNLEDGER_KAFKA_CONTROLLER_PORT KRaft controller port    (default RUNLEDGER_KAFKA_PORT+1)
#   RUNLEDGER_PG_PORT              PostgreSQL port           (default 15432)
#   RUNLEDGER_KAFKA_VERSION        Kafka version             (default: see fetch-kafka.sh)
#   RUNLEDGER_KAFKA_HEAP_OPTS      JVM heap                  (default "-Xms256m -Xmx1g")
#   RUNLEDGER_UP_TIMEOUT           seconds to wait for each service to be ready (default 120)
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/../.." && pwd)"

RUNLEDGER_HOME="${RUNLEDGER_HOME:-$REPO_ROOT/.runledger}"
KAFKA_PORT="${RUNLEDGER_KAFKA_PORT:-19092}"
KAFKA_CONTROLLER_PORT="${RUNLEDGER_KAFKA_CONTROLLER_PORT:-$((KAFKA_PORT + 1))}"
PG_PORT="${RUNLEDGER_PG_PORT:-15432}"
KAFKA_HEAP_OPTS="${RUNLEDGER_KAFKA_HEAP_OPTS:--Xms256m -Xmx1g}"
UP_TIMEOUT="${RUNLEDGER_UP_TIMEOUT:-120}"
HOST=127.0.0.1

KAFKA_HOME="$RUNLEDGER_HOME/kafka"          # config + data of the broker
KAFKA_DATA="$KAFKA_HOME/data"
KAFKA_CONFIG="$KAFKA_HOME/server.properties"
KAFKA_LOG4J="$KAFKA_HOME/log4j2.properties"
KAFKA_LOG="$RUNLEDGER_HOME/kafka.log"
KAFKA_PIDFILE="$RUNLEDGER_HOME/kafka.pid"

PG_DATA="$RUNLEDGER_HOME/pg"
PG_LOG="$RUNLEDGER_HOME/postgres.log"
PG_PIDFILE="$RUNLEDGER_HOME/postgres.pid"   # copy of the postmaster PID (pg/postmaster.pid is PostgreSQL's own)
PG_USER=runledger PG_PASSWORD=runledger PG_DB=runledger

KAFKA_BOOTSTRAP="$HOST:$KAFKA_PORT"
DATABASE_URL="postgresql://$PG_USER:$PG_PASSWORD@$HOST:$PG_PORT/$PG_DB"

log() { printf 'stack: %s\n' "$*"; }
warn() { printf 'stack: WARNING: %s\n' "$*" >&2; }
die() { printf 'stack: ERROR: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------------------------- helpers

# pid_alive, read_pid, broker_alive, kill_leftovers, port_open, show_log_tail, ready_python, the
# broker's configuration, log4j and JVM options, cluster ids, kafka_format, kafka_launch.
# shellcheck source=infra/local/kafka-lib.sh
source "$SCRIPT_DIR/kafka-lib.sh"

# -------------------------------------------------------------------------------- postgres

# ensure_pg_installed, pg_up, pg_down, pg_status.
# shellcheck source=infra/local/pg-lib.sh
source "$SCRIPT_DIR/pg-lib.sh"

# ----------------------------------------------------------------------------------- kafka

kafka_pid() { read_pid "$KAFKA_PIDFILE"; }
kafka_running() { broker_alive "$KAFKA_PIDFILE"; }

# How to probe readiness: aiokafka from the repo's venv (or any python3 that has it),
# else Kafka's own Java client as a single-file program.
kafka_probe() {  # kafka_probe [--warm-transactions]
  local py
  if py="$(ready_python)"; then
    "$py" "$SCRIPT_DIR/kafka_ready.py" "$KAFKA_BOOTSTRAP" --timeout 15 "$@"
  else
    java -cp "$KAFKA_LIBS/*" "$SCRIPT_DIR/KafkaReady.java" "$KAFKA_BOOTSTRAP"
  fi
}

kafka_write_config() {
  mkdir -p "$KAFKA_DATA"
  {
    printf '# Written by infra/local/stack.sh on every '\''up'\''; edits are overwritten.\n'
    printf '# Single node, KRaft, broker and controller in one process; one replica of everything.\n'
    kafka_server_config 1 "1@$HOST:$KAFKA_CONTROLLER_PORT" "$KAFKA_PORT" "$KAFKA_CONTROLLER_PORT" "$KAFKA_DATA" 1 1
  } >"$KAFKA_CONFIG"
  kafka_write_log4j "$KAFKA_LOG4J" stack.sh kafka.log
}

kafka_up() {
  "$SCRIPT_DIR/fetch-kafka.sh"
  KAFKA_LIBS="$("$SCRIPT_DIR/fetch-kafka.sh" --libs-dir)"
  local version
  version="$(sed -n 's/^version=//p' "$KAFKA_LIBS/../.complete")"

  if kafka_running; then
    log "kafka: already running (pid $(kafka_pid))"
  else
    rm -f "$KAFKA_PIDFILE"
    local p
    for p in "$KAFKA_PORT" "$KAFKA_CONTROLLER_PORT"; do
      if port_open "$p"; then
        die "kafka: port $HOST:$p is already in use by another process (set RUNLEDGER_KAFKA_PORT / RUNLEDGER_KAFKA_CONTROLLER_PORT)"
      fi
    done
    command -v java >/dev/null 2>&1 || die "java not found (Kafka needs Java 17+)"
    kafka_write_config
    kafka_java_opts "$KAFKA_HEAP_OPTS" "$KAFKA_LOG4J" "$RUNLEDGER_HOME"
    kafka_format "$KAFKA_CONFIG" "$KAFKA_DATA" "$KAFKA_LOG" "$(kafka_new_cluster_id)" kafka
    log "kafka: starting $version on $KAFKA_BOOTSTRAP (controller $HOST:$KAFKA_CONTROLLER_PORT, data $KAFKA_DATA, log $KAFKA_LOG)"
    printf '\n===== %s stack.sh: starting Kafka %s =====\n' "$(date -u +%FT%TZ)" "$version" >>"$KAFKA_LOG"
    kafka_launch "$KAFKA_CONFIG" "$KAFKA_LOG" "$KAFKA_PIDFILE"
    printf '%s\n' "$version" >"$KAFKA_HOME/version"
  fi

  # Ready = a real Metadata/DescribeCluster request succeeds; then one transactional
  # InitProducerId and one group OffsetFetch, so the internal topics exist before tests.
  local deadline=$((SECONDS + UP_TIMEOUT)) out="" warm=(--warm-transactions)
  log "kafka: waiting for a metadata request to succeed (up to ${UP_TIMEOUT}s) ..."
  while :; do
    if port_open "$KAFKA_PORT" && out="$(kafka_probe "${warm[@]}" 2>&1)"; then break; fi
    if ! kafka_running; then
      show_log_tail "$KAFKA_LOG"
      die "kafka: the broker process exited during start-up; see $KAFKA_LOG"
    fi
    if (( SECONDS >= deadline )); then
      show_log_tail "$KAFKA_LOG"
      die "kafka: not ready after ${UP_TIMEOUT}s at $KAFKA_BOOTSTRAP (last probe: ${out:-port closed}); see $KAFKA_LOG"
    fi
    sleep 1
  done
  log "kafka: ready at $KAFKA_BOOTSTRAP ($out)"
}

kafka_down() {
  local pid
  pid="$(kafka_pid)"
  if kafka_running; then
    log "kafka: stopping (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    local deadline=$((SECONDS + 60))
    while pid_alive "$pid" && (( SECONDS < deadline )); do sleep 0.5; done
    if pid_alive "$pid"; then
      warn "kafka: still running after 60s; sending SIGKILL to $pid"
      kill -KILL "$pid" 2>/dev/null || true
    fi
  else
    log "kafka: not running"
  fi
  kill_leftovers "kafka.Kafka $KAFKA_CONFIG" kafka  # a broker started with this home's config that lost its pid file
  rm -f "$KAFKA_PIDFILE"
}

kafka_status() {
  local pid version=""
  pid="$(kafka_pid)"
  if [[ -f "$KAFKA_HOME/version" ]]; then version=" $(cat "$KAFKA_HOME/version")"; fi
  if kafka_running; then
    local out
    KAFKA_LIBS="$("$SCRIPT_DIR/fetch-kafka.sh" --libs-dir)"
    if port_open "$KAFKA_PORT" && out="$(kafka_probe 2>&1)"; then
      log "kafka:$version running (pid $pid) on $KAFKA_BOOTSTRAP, ready ($out); log $KAFKA_LOG"
    else
      log "kafka:$version running (pid $pid) on $KAFKA_BOOTSTRAP, NOT ready (${out:-port closed}); log $KAFKA_LOG"
      return 1
    fi
  else
    log "kafka: stopped"
    return 1
  fi
}

# ------------------------------------------------------------------------------------ main

cmd_up() {
  mkdir -p "$RUNLEDGER_HOME"
  local start=$SECONDS
  ensure_pg_installed
  kafka_up
  pg_up
  log "up in $((SECONDS - start))s. For your shell: eval \"\$($0 env)\""
}

cmd_down() {
  kafka_down
  pg_down
}

cmd_status() {
  local rc=0
  kafka_status || rc=1
  pg_status || rc=1
  return "$rc"
}

cmd_env() {
  printf 'export KAFKA_BOOTSTRAP=%s\n' "$KAFKA_BOOTSTRAP"
  printf 'export DATABASE_URL=%s\n' "$DATABASE_URL"
}

case "${1:-}" in
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  env) cmd_env ;;
  *) printf 'usage: %s up|down|status|env\n' "$0" >&2; exit 2 ;;
esac
