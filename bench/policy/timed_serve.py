"""`python -m infra.entry.cli serve ...` with the processor's policy evaluation timed (the HTTP phase's processor).

The benchmark wraps `evaluate` where the RequestToolCall handler looks it up (domain/policing.py, a
module global read at each call) in a function that adds each call's wall time and the calling
thread's CPU time to totals per envelope (its policy_id, or "none" when no envelope is active: the
fail-closed DENY without Cedar). The two differ when the thread waits inside evaluate(): cedarpy
releases the GIL while Cedar runs, and taking it back waits for whichever thread took it meanwhile
(up to sys.getswitchinterval(), 5 ms). A daemon thread writes the totals every 0.2 s to
$BENCH_POLICY_TIMINGS/evaluate-<pid>.json with the CLOCK_MONOTONIC time they were read at and the
process's threads. Nothing else changes: the wrapper costs two perf_counter and two thread_time
calls and a lock per tool call (about 1 µs here). The project's code is not edited.
"""
from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import domain.policing as policing

INTERVAL_S = 0.2
_evaluate = policing.evaluate
_lock = threading.Lock()
_totals: dict[str, list] = {}  # envelope's policy_id or "none" → [calls, wall seconds, thread CPU seconds]


def timed_evaluate(envelope, request, scope="this scope"):
    started, cpu = time.perf_counter(), time.thread_time()
    try:
        return _evaluate(envelope, request, scope)
    finally:
        spent, used = time.perf_counter() - started, time.thread_time() - cpu
        key = envelope.policy_id if envelope is not None else "none"
        with _lock:
            entry = _totals.setdefault(key, [0, 0.0, 0.0])
            entry[0] += 1
            entry[1] += spent
            entry[2] += used


def write_totals(directory: Path) -> None:
    path, tmp = directory / f"evaluate-{os.getpid()}.json", directory / f".evaluate-{os.getpid()}.tmp"
    while True:
        with _lock:
            snapshot = {k: list(v) for k, v in _totals.items()}
        threads = [t.name for t in threading.enumerate()]
        tmp.write_text(json.dumps({"at": time.monotonic(), "totals": snapshot, "threads": threads}))
        os.replace(tmp, path)
        time.sleep(INTERVAL_S)


def install() -> None:
    policing.evaluate = timed_evaluate
    directory = os.environ.get("BENCH_POLICY_TIMINGS")
    if directory:
        threading.Thread(target=write_totals, args=(Path(directory),), name="bench-evaluate-timings",
                         daemon=True).start()


if __name__ == "__main__":
    install()
    from infra.entry.cli import app
    app()
