#!/usr/bin/env bash
# Create .venv with Python 3.11 and install runledger with its pinned dependencies.
# Re-runs are cheap: nothing is reinstalled while pyproject.toml is unchanged.
set -euo pipefail
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VENV="$REPO_ROOT/.venv"
STAMP="$VENV/.runledger-installed"

find_python() {
  local candidate
  for candidate in "${RUNLEDGER_PYTHON:-}" python3.11 python3; do
    [[ -n "$candidate" ]] || continue
    if command -v "$candidate" >/dev/null 2>&1 &&
       "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
      command -v "$candidate"; return 0
    fi
  done
  return 1
}

want="$(sha256sum "$REPO_ROOT/pyproject.toml" | cut -d' ' -f1)"
if [[ -x "$VENV/bin/python" && -f "$STAMP" && "$(cat "$STAMP")" == "$want" ]]; then
  exit 0
fi
PYTHON="$(find_python)" || { echo "setup: ERROR: Python 3.11 is required (set RUNLEDGER_PYTHON to its path)" >&2; exit 1; }
echo "setup: installing runledger and its pinned dependencies into $VENV (first run takes a few minutes) ..."
[[ -x "$VENV/bin/python" ]] || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q -e "${REPO_ROOT}[dev,bench]"
echo "$want" > "$STAMP"
echo "setup: done"
