#!/usr/bin/env bash
# Run the whole test suite (unit, integration, e2e) against a real local Kafka broker and
# PostgreSQL started here; services this script started are stopped when it ends.
# Extra arguments go to pytest, e.g. `infra/local/test.sh tests/unit -k hash`.
set -euo pipefail
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$REPO_ROOT"
STACK=infra/local/stack.sh

bash infra/local/setup.sh
if ! command -v chromium >/dev/null 2>&1; then
  echo "test: installing Debian's chromium for the browser test ..."
  if [[ $EUID -eq 0 ]]; then
    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null
  else
    echo "test: ERROR: chromium is missing; run 'sudo apt-get install -y chromium' first" >&2; exit 1
  fi
fi
if bash "$STACK" status >/dev/null 2>&1; then
  echo "test: using the local stack that is already running"
else
  trap 'bash "$STACK" down' EXIT
  bash "$STACK" up
fi
eval "$(bash "$STACK" env)"
export RUNLEDGER_KAFKA_BOOTSTRAP="$KAFKA_BOOTSTRAP" RUNLEDGER_DATABASE_URL="$DATABASE_URL"
.venv/bin/python -m pytest -p no:cacheprovider "${@:-tests}"
