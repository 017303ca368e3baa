#!/usr/bin/env bash
# Fetch the real Apache Kafka broker (org.apache.kafka:kafka_2.13) and its runtime
# dependencies from Maven Central, with Maven, into a cache outside the repo:
#
#   ${XDG_CACHE_HOME:-$HOME/.cache}/runledger/kafka-<VERSION>/libs/*.jar
#
# Idempotent: if that directory is complete already, nothing is fetched.
# The chosen version and why: docs/adr/0001-kafka-version.md.
#
# Usage: infra/local/fetch-kafka.sh            fetch (if needed), print progress
#        infra/local/fetch-kafka.sh --libs-dir print the libs directory and exit
set -euo pipefail

RUNLEDGER_KAFKA_VERSION="${RUNLEDGER_KAFKA_VERSION:-4.4.0}"

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
POM="$SCRIPT_DIR/../kafka/pom.xml"
CACHE_ROOT="${XDG_CACHE_HOME:-$HOME/.cache}/runledger"
KAFKA_CACHE="$CACHE_ROOT/kafka-$RUNLEDGER_KAFKA_VERSION"
LIBS_DIR="$KAFKA_CACHE/libs"
MARKER="$KAFKA_CACHE/.complete"

log() { printf 'fetch-kafka: %s\n' "$*"; }
die() { printf 'fetch-kafka: ERROR: %s\n' "$*" >&2; exit 1; }

if [[ "${1:-}" == "--libs-dir" ]]; then
  printf '%s\n' "$LIBS_DIR"
  exit 0
fi
[[ $# -eq 0 ]] || die "unknown argument: $1 (usage: $0 [--libs-dir])"

if [[ -f "$MARKER" && -f "$LIBS_DIR/kafka_2.13-$RUNLEDGER_KAFKA_VERSION.jar" ]]; then
  log "Kafka $RUNLEDGER_KAFKA_VERSION already cached in $LIBS_DIR"
  exit 0
fi

command -v mvn >/dev/null 2>&1 || die "mvn not found (install Maven, e.g. apt-get install -y maven)"
command -v java >/dev/null 2>&1 || die "java not found (Kafka needs Java 17+, e.g. apt-get install -y openjdk-17-jre-headless)"
[[ -f "$POM" ]] || die "missing $POM"

mkdir -p "$KAFKA_CACHE"
staging="$(mktemp -d "$KAFKA_CACHE/libs.partial.XXXXXX")"
trap 'rm -rf "$staging"' EXIT

log "fetching org.apache.kafka:kafka_2.13:$RUNLEDGER_KAFKA_VERSION and its runtime dependencies with Maven ..."
start=$SECONDS
mvn_log="$KAFKA_CACHE/mvn.log"
if ! mvn -B -q -f "$POM" dependency:copy-dependencies \
      -Dkafka.version="$RUNLEDGER_KAFKA_VERSION" \
      -DoutputDirectory="$staging" >"$mvn_log" 2>&1; then
  cat "$mvn_log" >&2
  die "mvn failed to resolve Kafka $RUNLEDGER_KAFKA_VERSION (is that version published? output above, also in $mvn_log)"
fi

[[ -f "$staging/kafka_2.13-$RUNLEDGER_KAFKA_VERSION.jar" ]] \
  || die "kafka_2.13-$RUNLEDGER_KAFKA_VERSION.jar missing after mvn ran"
count="$(find "$staging" -maxdepth 1 -name '*.jar' | wc -l)"
log "resolved $count jars in $((SECONDS - start))s"

rm -rf "$LIBS_DIR"
chmod 755 "$staging"
mv "$staging" "$LIBS_DIR"
trap - EXIT
printf 'version=%s\njars=%s\n' "$RUNLEDGER_KAFKA_VERSION" "$count" >"$MARKER"
log "Kafka $RUNLEDGER_KAFKA_VERSION cached in $LIBS_DIR"
