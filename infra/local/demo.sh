#!/usr/bin/env bash
# Start the whole system on the local defaults (Kafka, PostgreSQL, the API and the command
# processor in one process), drive the demo workload, verify its chain, then keep serving
# until Ctrl-C. With --once (or CI=true) it stops everything after the demo.
set -euo pipefail
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$REPO_ROOT"
STACK=infra/local/stack.sh
ONCE=false
[[ "${1:-}" == "--once" || "${CI:-}" == "true" ]] && ONCE=true

bash infra/local/setup.sh
bash "$STACK" up
eval "$(bash "$STACK" env)"
HOME_DIR="${RUNLEDGER_HOME:-$REPO_ROOT/.runledger}"
SECRET_FILE="$HOME_DIR/jwt_secret"
[[ -s "$SECRET_FILE" ]] || .venv/bin/python -c 'import secrets; print(secrets.token_urlsafe(48))' > "$SECRET_FILE"
chmod 600 "$SECRET_FILE"
export RUNLEDGER_KAFKA_BOOTSTRAP="$KAFKA_BOOTSTRAP" RUNLEDGER_DATABASE_URL="$DATABASE_URL"
# A demo deployment lets a tenant keep operational records 0 days, so its sweep shows at once.
export RUNLEDGER_RETENTION_MIN_DAYS_OPERATIONAL="${RUNLEDGER_RETENTION_MIN_DAYS_OPERATIONAL:-0}"
RUNLEDGER_JWT_SECRET="$(cat "$SECRET_FILE")"
export RUNLEDGER_JWT_SECRET
KEK_FILE="$HOME_DIR/kek"
[[ -s "$KEK_FILE" ]] || .venv/bin/python -c 'import base64,os; print(base64.b64encode(os.urandom(32)).decode())' > "$KEK_FILE"
chmod 600 "$KEK_FILE"
RUNLEDGER_KEK="$(cat "$KEK_FILE")"
export RUNLEDGER_KEK
SIGNING_FILE="$HOME_DIR/signing_key"
[[ -s "$SIGNING_FILE" ]] || .venv/bin/python -c 'import base64,os; print(base64.b64encode(os.urandom(32)).decode())' > "$SIGNING_FILE"
chmod 600 "$SIGNING_FILE"
RUNLEDGER_SIGNING_KEY="$(cat "$SIGNING_FILE")"
export RUNLEDGER_SIGNING_KEY
# The demo's processor signs checkpoints every 2 s, so the export shows without a long wait.
export RUNLEDGER_CHECKPOINT_INTERVAL_S="${RUNLEDGER_CHECKPOINT_INTERVAL_S:-2}"
PORT="${RUNLEDGER_API_PORT:-8080}"
URL="http://127.0.0.1:$PORT"

.venv/bin/runledger serve --port "$PORT" > "$HOME_DIR/serve.log" 2>&1 &
SERVE_PID=$!
cleanup() {
  if kill "$SERVE_PID" 2>/dev/null; then wait "$SERVE_PID" 2>/dev/null || true; fi
  bash "$STACK" down
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "demo: waiting for the API and the command processor at $URL ..."
for _ in $(seq 1 240); do
  if curl -fsS "$URL/healthz" 2>/dev/null | grep -q '"owned_partitions":\[[0-9]'; then break; fi
  kill -0 "$SERVE_PID" 2>/dev/null || { tail -n 30 "$HOME_DIR/serve.log" >&2; echo "demo: ERROR: runledger serve exited; see $HOME_DIR/serve.log" >&2; exit 1; }
  sleep 0.5
done
curl -fsS "$URL/healthz" >/dev/null || { echo "demo: ERROR: $URL/healthz not ready after 120 s; see $HOME_DIR/serve.log" >&2; exit 1; }

.venv/bin/runledger demo --url "$URL" --tenant "demo-$(date +%s)"

if $ONCE; then exit 0; fi
cat <<MSG

runledger is running at $URL (OpenAPI: $URL/docs). Try:
  export RUNLEDGER_JWT_SECRET="\$(cat $SECRET_FILE)" RUNLEDGER_KAFKA_BOOTSTRAP=$KAFKA_BOOTSTRAP
  TOKEN=\$(.venv/bin/runledger token --tenant acme --subject me --roles operator)
  curl -s -H "Authorization: Bearer \$TOKEN" -d '{"type":"RequestRun","agent_id":"my-agent"}' $URL/v1/commands
  .venv/bin/runledger verify --tenant acme
Press Ctrl-C to stop everything.
MSG
wait "$SERVE_PID"
