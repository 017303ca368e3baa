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

pid_alive() { [[ -n "${1:-}" ]] && kill -0 "$1" 2>/dev/null; }
read_pid() { if [[ -f "$1" ]]; then head -n1 "$1" | tr -dc '0-9'; fi; }

port_open() {  # port_open PORT: something accepts TCP connections on 127.0.0.1:PORT
  (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null
}

show_log_tail() {  # show_log_tail FILE
  if [[ -f "$1" ]]; then
    printf -- '----- last 25 lines of %s -----\n' "$1" >&2
    tail -n 25 "$1" >&2 || true
    printf -- '-----\n' >&2
  fi
}

# -------------------------------------------------------------------------------- postgres

# The PostgreSQL server binaries: Debian keeps them in /usr/lib/postgresql/<major>/bin,
# which is not on PATH; an initdb/pg_ctl on PATH wins if there is one.
find_pg_bindir() {
  local p d
  if p="$(command -v pg_ctl 2>/dev/null)" && command -v initdb >/dev/null 2>&1; then
    d="$(dirname "$(readlink -f "$p")")"
    if [[ -x "$d/postgres" && -x "$d/initdb" ]]; then printf '%s\n' "$d"; return 0; fi
  fi
  for d in $(find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -name bin -type d 2>/dev/null | sort -V -r); do
    if [[ -x "$d/postgres" && -x "$d/initdb" && -x "$d/pg_ctl" ]]; then printf '%s\n' "$d"; return 0; fi
  done
  return 1
}

ensure_pg_installed() {
  if PG_BIN="$(find_pg_bindir)"; then return 0; fi
  log "PostgreSQL server binaries not found: installing Debian's postgresql package ..."
  [[ $EUID -eq 0 ]] || die "PostgreSQL is not installed and this is not root: run 'sudo apt-get install -y postgresql' first"
  command -v apt-get >/dev/null 2>&1 || die "PostgreSQL is not installed and apt-get is not available: install PostgreSQL server binaries (initdb, pg_ctl, postgres)"
  apt-get update
  DEBIAN_FRONTEND=noninteractive apt-get install -y postgresql
  PG_BIN="$(find_pg_bindir)" || die "postgresql installed but initdb/pg_ctl/postgres not found under /usr/lib/postgresql/*/bin"
}

# PostgreSQL refuses to run as root: as root, run its tools as the postgres OS user.
if [[ $EUID -eq 0 ]]; then
  PG_OS_USER=postgres
  as_pg() { (cd / && runuser -u postgres -- "$@"); }
else
  PG_OS_USER="$(id -un)"
  as_pg() { "$@"; }
fi
PG_SUPERUSER="$PG_OS_USER"

# As root, PostgreSQL runs as the postgres user, which must be able to reach its data directory.
# A home under a private directory (mktemp -d makes them 0700) cannot be reached; the cluster then
# lives in /var/tmp under a name derived from the home, so status and down find the same one.
existing_ancestor() { local d="$1"; while [[ ! -e "$d" ]]; do d="$(dirname "$d")"; done; printf '%s' "$d"; }
if [[ $EUID -eq 0 ]] && id postgres >/dev/null 2>&1 \
   && ! runuser -u postgres -- test -x "$(existing_ancestor "$RUNLEDGER_HOME")" 2>/dev/null; then
  PG_HOME="/var/tmp/runledger-pg-$(printf '%s' "$RUNLEDGER_HOME" | sha256sum | cut -c1-16)"
  PG_DATA="$PG_HOME/data"
  PG_LOG="$PG_HOME/postgres.log"
  mkdir -p "$PG_HOME" && chown postgres "$PG_HOME" && chmod 755 "$PG_HOME"
fi

# Unix socket for local superuser access (peer auth). A socket path is limited to ~107
# bytes, so fall back to /tmp when RUNLEDGER_HOME is deep.
if (( ${#PG_DATA} <= 80 )); then PG_SOCKET_DIR="$PG_DATA"; else PG_SOCKET_DIR="/tmp/runledger-pg-$PG_PORT"; fi

pg_postmaster_pid() { read_pid "$PG_DATA/postmaster.pid"; }
pg_running() { [[ -d "$PG_DATA" ]] && pid_alive "$(pg_postmaster_pid)"; }

pg_psql_super() {  # pg_psql_super ARGS...: psql as the cluster superuser over the socket
  as_pg "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$PG_SOCKET_DIR" -p "$PG_PORT" -U "$PG_SUPERUSER" -d postgres "$@"
}

pg_init() {
  if [[ $EUID -eq 0 ]]; then
    id postgres >/dev/null 2>&1 || die "no 'postgres' OS user (it comes with Debian's postgresql package)"
    runuser -u postgres -- test -x "$(dirname "$PG_DATA")" \
      || die "the postgres OS user cannot reach $(dirname "$PG_DATA") (a parent directory is not world-executable); set RUNLEDGER_HOME elsewhere"
  fi
  if [[ ! -f "$PG_DATA/PG_VERSION" ]]; then
    log "postgres: initialising data directory $PG_DATA"
    mkdir -p "$PG_DATA"
    chown "$PG_OS_USER" "$PG_DATA"
    chmod 700 "$PG_DATA"
    as_pg "$PG_BIN/initdb" -D "$PG_DATA" -U "$PG_SUPERUSER" -E UTF8 --no-locale \
      --auth-local=peer --auth-host=scram-sha-256 >>"$PG_LOG.init" 2>&1 \
      || { show_log_tail "$PG_LOG.init"; die "postgres: initdb failed (see $PG_LOG.init)"; }
    printf "\ninclude_if_exists = 'runledger.conf'\n" | as_pg tee -a "$PG_DATA/postgresql.conf" >/dev/null
  fi
  # Rewritten on every start so that port overrides take effect.
  as_pg tee "$PG_DATA/runledger.conf" >/dev/null <<EOF
# Written by infra/local/stack.sh on every 'up'; edits are overwritten.
listen_addresses = '$HOST'
port = $PG_PORT
unix_socket_directories = '$PG_SOCKET_DIR'
max_connections = 200
logging_collector = off
EOF
  if [[ "$PG_SOCKET_DIR" != "$PG_DATA" ]]; then
    mkdir -p "$PG_SOCKET_DIR" && chown "$PG_OS_USER" "$PG_SOCKET_DIR" && chmod 700 "$PG_SOCKET_DIR"
  fi
  touch "$PG_LOG" && chown "$PG_OS_USER" "$PG_LOG"
}

pg_up() {
  ensure_pg_installed
  if pg_running; then
    log "postgres: already running (pid $(pg_postmaster_pid))"
  else
    pg_init
    if port_open "$PG_PORT"; then
      die "postgres: port $HOST:$PG_PORT is already in use by another process (set RUNLEDGER_PG_PORT)"
    fi
    log "postgres: starting on $HOST:$PG_PORT (data $PG_DATA, log $PG_LOG)"
    as_pg "$PG_BIN/pg_ctl" -D "$PG_DATA" -l "$PG_LOG" -w -t "$UP_TIMEOUT" start >/dev/null \
      || { show_log_tail "$PG_LOG"; die "postgres: failed to start within ${UP_TIMEOUT}s; see $PG_LOG"; }
  fi
  pg_postmaster_pid >"$PG_PIDFILE"

  local deadline=$((SECONDS + UP_TIMEOUT))
  until "$PG_BIN/pg_isready" -q -h "$HOST" -p "$PG_PORT" -d postgres; do
    if (( SECONDS >= deadline )); then
      show_log_tail "$PG_LOG"
      die "postgres: pg_isready -h $HOST -p $PG_PORT still failing after ${UP_TIMEOUT}s; see $PG_LOG"
    fi
    pg_running || { show_log_tail "$PG_LOG"; die "postgres: server exited during start-up; see $PG_LOG"; }
    sleep 0.5
  done

  # Role and database (idempotent). CREATEDB so tests can create throwaway databases.
  pg_psql_super -f - <<SQL || die "postgres: could not create role/database $PG_USER (see messages above and $PG_LOG)"
SELECT format('CREATE ROLE %I LOGIN CREATEDB PASSWORD %L', '$PG_USER', '$PG_PASSWORD')
  WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$PG_USER') \gexec
ALTER ROLE "$PG_USER" LOGIN CREATEDB PASSWORD '$PG_PASSWORD';
SELECT format('CREATE DATABASE %I OWNER %I', '$PG_DB', '$PG_USER')
  WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '$PG_DB') \gexec
SQL
  # The same login the application uses: TCP, password, the runledger database.
  PGPASSWORD="$PG_PASSWORD" "$PG_BIN/psql" -X -q -At -h "$HOST" -p "$PG_PORT" -U "$PG_USER" -d "$PG_DB" \
    -c 'SELECT 1' >/dev/null \
    || die "postgres: running, but '$PG_USER' cannot log in to $DATABASE_URL; see $PG_LOG"
  log "postgres: ready at $DATABASE_URL"
}

pg_down() {
  local pid
  pid="$(pg_postmaster_pid)"
  if [[ -d "$PG_DATA" ]] && pid_alive "$pid"; then
    log "postgres: stopping (pid $pid)"
    PG_BIN="$(find_pg_bindir)" || PG_BIN=""
    if [[ -n "$PG_BIN" ]] && as_pg "$PG_BIN/pg_ctl" -D "$PG_DATA" -m fast -w -t 30 stop >/dev/null 2>&1; then
      :
    else
      warn "postgres: pg_ctl stop failed; sending SIGQUIT/SIGKILL to $pid"
      kill -QUIT "$pid" 2>/dev/null || true
      sleep 2
      kill -KILL "$pid" 2>/dev/null || true
    fi
  else
    log "postgres: not running"
  fi
  # Leftovers: a postmaster for this data directory that lost its pid file.
  local p
  for p in $(pgrep -f -- "postgres -D $PG_DATA\$" 2>/dev/null || true); do
    warn "postgres: killing leftover postmaster $p"
    kill -KILL "$p" 2>/dev/null || true
  done
  rm -f "$PG_PIDFILE"
}

pg_status() {
  local pid
  pid="$(pg_postmaster_pid)"
  if [[ -d "$PG_DATA" ]] && pid_alive "$pid"; then
    local bindir ready="not accepting connections"
    if bindir="$(find_pg_bindir)" && "$bindir/pg_isready" -q -h "$HOST" -p "$PG_PORT"; then ready="accepting connections"; fi
    log "postgres: running (pid $pid) on $HOST:$PG_PORT, $ready; data $PG_DATA, log $PG_LOG"
    [[ "$ready" == "accepting connections" ]]
  else
    log "postgres: stopped"
    return 1
  fi
}

# ----------------------------------------------------------------------------------- kafka

kafka_pid() { read_pid "$KAFKA_PIDFILE"; }
kafka_running() {  # the pid file's process is alive and is a Kafka broker
  local pid
  pid="$(kafka_pid)"
  pid_alive "$pid" && grep -qa 'kafka\.Kafka' "/proc/$pid/cmdline" 2>/dev/null
}

# How to probe readiness: aiokafka from the repo's venv (or any python3 that has it),
# else Kafka's own Java client as a single-file program.
kafka_probe() {  # kafka_probe [--warm-transactions]
  local py
  for py in "$REPO_ROOT/.venv/bin/python" python3; do
    if command -v "$py" >/dev/null 2>&1 && "$py" -c 'import aiokafka' 2>/dev/null; then
      "$py" "$SCRIPT_DIR/kafka_ready.py" "$KAFKA_BOOTSTRAP" --timeout 15 "$@"
      return
    fi
  done
  java -cp "$KAFKA_LIBS/*" "$SCRIPT_DIR/KafkaReady.java" "$KAFKA_BOOTSTRAP"
}

kafka_write_config() {
  mkdir -p "$KAFKA_DATA"
  cat >"$KAFKA_CONFIG" <<EOF
# Written by infra/local/stack.sh on every 'up'; edits are overwritten.
# Single node, KRaft, broker and controller in one process.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@$HOST:$KAFKA_CONTROLLER_PORT
listeners=PLAINTEXT://$HOST:$KAFKA_PORT,CONTROLLER://$HOST:$KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://$HOST:$KAFKA_PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$KAFKA_DATA

# Topics are created explicitly by the application, never by accident.
auto.create.topics.enable=false
num.partitions=1
default.replication.factor=1
min.insync.replicas=1

# Internal topics with one replica, and fewer partitions so the first consumer group and
# the first transactional producer do not wait for 50 partitions each to be created.
offsets.topic.replication.factor=1
offsets.topic.num.partitions=10
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=10
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1

# No 3 s wait before the first rebalance of an empty group.
group.initial.rebalance.delay.ms=0
# A killed processor's partitions move once its group session times out (RUNLEDGER_SESSION_TIMEOUT_MS,
# 3 s by default): allow sessions that short; Kafka's default floor is 6 s (docs/bench-failover.md).
group.min.session.timeout.ms=1000

# Modest footprint for a 2-core laptop/CI machine.
num.network.threads=2
num.io.threads=4
num.recovery.threads.per.data.dir=1
log.cleaner.threads=1
log.cleaner.dedupe.buffer.size=33554432
EOF
  cat >"$KAFKA_LOG4J" <<'EOF'
# Written by infra/local/stack.sh. Everything goes to stdout, which stack.sh appends to kafka.log.
status = warn
name = runledger-kafka
appender.stdout.type = Console
appender.stdout.name = STDOUT
appender.stdout.layout.type = PatternLayout
appender.stdout.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.stdout.ref = STDOUT
logger.request.name = kafka.request.logger
logger.request.level = WARN
logger.statechange.name = state.change.logger
logger.statechange.level = WARN
EOF
}

kafka_java_opts() {
  # shellcheck disable=SC2206  # heap options are meant to split on spaces
  KAFKA_JAVA_OPTS=($KAFKA_HEAP_OPTS
    -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35
    -XX:+ExplicitGCInvokesConcurrent -XX:+ExitOnOutOfMemoryError
    -Djava.awt.headless=true
    "-Dlog4j2.configurationFile=$KAFKA_LOG4J" "-Dkafka.logs.dir=$RUNLEDGER_HOME")
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
    kafka_java_opts
    if [[ ! -f "$KAFKA_DATA/meta.properties" ]]; then
      # A random cluster id: 16 random bytes, base64url without padding (Kafka's Uuid format).
      # One that starts with '-' would be read by the tool's argument parser as an option.
      local cluster_id="-"
      while [[ "$cluster_id" == -* ]]; do
        cluster_id="$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=')"
      done
      log "kafka: formatting storage $KAFKA_DATA (cluster id $cluster_id)"
      java "${KAFKA_JAVA_OPTS[@]}" -cp "$KAFKA_LIBS/*" kafka.tools.StorageTool format \
          -t "$cluster_id" -c "$KAFKA_CONFIG" >>"$KAFKA_LOG" 2>&1 \
        || { show_log_tail "$KAFKA_LOG"; die "kafka: storage format failed; see $KAFKA_LOG"; }
    fi
    log "kafka: starting $version on $KAFKA_BOOTSTRAP (controller $HOST:$KAFKA_CONTROLLER_PORT, data $KAFKA_DATA, log $KAFKA_LOG)"
    printf '\n===== %s stack.sh: starting Kafka %s =====\n' "$(date -u +%FT%TZ)" "$version" >>"$KAFKA_LOG"
    # setsid: the broker outlives this script and is not hit by a Ctrl-C sent to it.
    setsid java "${KAFKA_JAVA_OPTS[@]}" -cp "$KAFKA_LIBS/*" kafka.Kafka "$KAFKA_CONFIG" \
      >>"$KAFKA_LOG" 2>&1 </dev/null &
    echo $! >"$KAFKA_PIDFILE"
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
  # Leftovers: a broker started with this home's config whose pid file was lost.
  local p
  for p in $(pgrep -f -- "kafka.Kafka $KAFKA_CONFIG" 2>/dev/null || true); do
    warn "kafka: killing leftover broker $p"
    kill -KILL "$p" 2>/dev/null || true
  done
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
