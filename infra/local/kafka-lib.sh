# shellcheck shell=bash
# Shell functions shared by infra/local/stack.sh (one broker) and infra/local/cluster.sh (three):
# process helpers, a broker's server.properties, logging and JVM options, a fresh KRaft cluster id,
# formatting and starting a broker, and the python that probes it. Sourced, never run; callers set
# HOST, SCRIPT_DIR and REPO_ROOT, define log and die, and set KAFKA_LIBS (and KAFKA_JAVA_OPTS, by
# kafka_java_opts) before starting a broker.

pid_alive() { [[ -n "${1:-}" ]] && kill -0 "$1" 2>/dev/null; }
read_pid() { if [[ -f "$1" ]]; then head -n1 "$1" | tr -dc '0-9'; fi; }
broker_alive() {  # broker_alive PIDFILE: its process is alive and is a Kafka broker
  local pid
  pid="$(read_pid "$1")"
  pid_alive "$pid" && grep -qa 'kafka\.Kafka' "/proc/$pid/cmdline" 2>/dev/null
}

kill_leftovers() {  # kill_leftovers PATTERN WHAT: SIGKILL the processes whose command line matches (pid file lost)
  local p
  for p in $(pgrep -f -- "$1" 2>/dev/null || true); do
    log "$2: killing leftover process $p"
    kill -KILL "$p" 2>/dev/null || true
  done
}

port_open() {  # port_open PORT: something accepts TCP connections on $HOST:PORT
  (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null
}

show_log_tail() {  # show_log_tail FILE
  if [[ -f "$1" ]]; then
    printf -- '----- last 25 lines of %s -----\n' "$1" >&2
    tail -n 25 "$1" >&2 || true
    printf -- '-----\n' >&2
  fi
}

ready_python() {  # print a python that has aiokafka, to run kafka_ready.py (the repo's venv first); else fail
  local py
  for py in "$REPO_ROOT/.venv/bin/python" python3; do
    if command -v "$py" >/dev/null 2>&1 && "$py" -c 'import aiokafka' 2>/dev/null; then
      printf '%s\n' "$py"
      return
    fi
  done
  return 1
}

kafka_server_config() {  # kafka_server_config NODE_ID VOTERS PORT CONTROLLER_PORT DATA_DIR RF MIN_ISR
  cat <<EOF2
process.roles=broker,controller
node.id=$1
controller.quorum.voters=$2
listeners=PLAINTEXT://$HOST:$3,CONTROLLER://$HOST:$4
advertised.listeners=PLAINTEXT://$HOST:$3
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$5

# Topics are created explicitly by the application, never by accident.
auto.create.topics.enable=false
num.partitions=1
# Replicas of a topic, and how many must have a write before it is acknowledged (acks=all): with 3 and 2,
# one broker may be down without refusing writes, and an acknowledged write survives the loss of any one.
default.replication.factor=$6
min.insync.replicas=$7
unclean.leader.election.enable=false

# Internal topics replicated the same way, with fewer partitions, so the first consumer group and the
# first transactional producer do not wait for 50 partitions each to be created.
offsets.topic.replication.factor=$6
offsets.topic.num.partitions=10
transaction.state.log.replication.factor=$6
transaction.state.log.min.isr=$7
transaction.state.log.num.partitions=10
share.coordinator.state.topic.replication.factor=$6
share.coordinator.state.topic.min.isr=$7

EOF2
  kafka_tuning_config
}

kafka_tuning_config() {  # the group and footprint settings of every local broker (appended to server.properties)
  cat <<'EOF2'
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
EOF2
}

kafka_write_log4j() {  # kafka_write_log4j FILE SCRIPT LOGFILE
  cat >"$1" <<EOF2
# Written by infra/local/$2. Everything goes to stdout, which $2 appends to $3.
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
EOF2
}

kafka_java_opts() {  # kafka_java_opts HEAP_OPTS LOG4J_FILE LOGS_DIR: sets KAFKA_JAVA_OPTS
  # shellcheck disable=SC2206  # heap options are meant to split on spaces
  KAFKA_JAVA_OPTS=($1
    -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35
    -XX:+ExplicitGCInvokesConcurrent -XX:+ExitOnOutOfMemoryError
    -Djava.awt.headless=true
    "-Dlog4j2.configurationFile=$2" "-Dkafka.logs.dir=$3")
}

kafka_new_cluster_id() {
  # A random cluster id: 16 random bytes, base64url without padding (Kafka's Uuid format).
  # One that starts with '-' would be read by the tool's argument parser as an option.
  local cluster_id="-"
  while [[ "$cluster_id" == -* ]]; do
    cluster_id="$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=')"
  done
  printf '%s\n' "$cluster_id"
}

kafka_format() {  # kafka_format CONFIG DATA_DIR LOG CLUSTER_ID WHO: format the storage unless it is already
  if [[ -f "$2/meta.properties" ]]; then return 0; fi
  log "$5: formatting storage $2 (cluster id $4)"
  java "${KAFKA_JAVA_OPTS[@]}" -cp "$KAFKA_LIBS/*" kafka.tools.StorageTool format -t "$4" -c "$1" >>"$3" 2>&1 \
    || { show_log_tail "$3"; die "$5: storage format failed; see $3"; }
}

kafka_launch() {  # kafka_launch CONFIG LOG PIDFILE: start the broker in the background (no wait)
  # setsid: the broker outlives the script and is not hit by a Ctrl-C sent to it.
  setsid java "${KAFKA_JAVA_OPTS[@]}" -cp "$KAFKA_LIBS/*" kafka.Kafka "$1" >>"$2" 2>&1 </dev/null &
  local pid=$! i
  echo "$pid" >"$3"
  # Until the forked shell has exec'd java its command line is this script's, and broker_alive would call a
  # broker that is starting dead (seen on a loaded machine): wait for the exec, or for the process to go.
  for ((i = 0; i < 100; i++)); do
    broker_alive "$3" || ! pid_alive "$pid" && break
    sleep 0.1
  done
}
