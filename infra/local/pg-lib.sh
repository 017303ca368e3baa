# shellcheck shell=bash
# PostgreSQL for infra/local/stack.sh: install Debian's packages if missing, initialise a data directory,
# start, stop and report the server as the postgres user when run as root. Sourced, never run; stack.sh
# sets PG_DATA, PG_LOG, PG_PIDFILE, PG_PORT, PG_USER, PG_PASSWORD, PG_DB, HOST and UP_TIMEOUT and defines
# log, warn and die first.

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
  kill_leftovers "postgres -D $PG_DATA\$" postgres  # a postmaster for this data directory that lost its pid file
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
