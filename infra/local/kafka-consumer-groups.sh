#!/usr/bin/env bash
# Kafka's own kafka-consumer-groups tool, run from the cached broker jars plus the kafka-tools
# jar (fetched from Maven Central with mvn on first use). Usage: same arguments as the tool,
# e.g. infra/local/kafka-consumer-groups.sh --bootstrap-server 127.0.0.1:19092 --describe --group G
# kafka-tools is not published for every broker version; 4.3.0 is the newest that is, and its
# client speaks to a 4.4 broker.
set -euo pipefail
SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
TOOLS_VERSION="${RUNLEDGER_KAFKA_TOOLS_VERSION:-4.3.0}"
LIBS_DIR="$(bash "$SCRIPT_DIR/fetch-kafka.sh" --libs-dir)"
TOOLS_DIR="$(dirname "$LIBS_DIR")/tools-$TOOLS_VERSION"
JAR="$TOOLS_DIR/kafka-tools-$TOOLS_VERSION.jar"

[[ -d "$LIBS_DIR" ]] || bash "$SCRIPT_DIR/fetch-kafka.sh" >&2
if [[ ! -f "$JAR" ]]; then
  mkdir -p "$TOOLS_DIR"
  mvn -B -q dependency:copy -Dartifact="org.apache.kafka:kafka-tools:$TOOLS_VERSION" \
      -DoutputDirectory="$TOOLS_DIR" >&2 \
    || { echo "kafka-consumer-groups: ERROR: mvn could not fetch org.apache.kafka:kafka-tools:$TOOLS_VERSION" >&2; exit 1; }
fi
exec java -Xmx256m -cp "$LIBS_DIR/*:$JAR" org.apache.kafka.tools.consumer.group.ConsumerGroupCommand "$@"
