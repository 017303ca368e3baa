"""Optional profiles: cProfile of a catch-up (when its target is missed), py-spy of a steady window.

cProfile sees the event loop's thread only: chdb statements run in to_thread workers, so their
time shows as waiting there; the adapter's on_statement gives it apart (printed with the profile).
"""
from __future__ import annotations

import asyncio
import cProfile
import io
import os
import pstats
import time
from collections import Counter
from pathlib import Path

from bench.read.catchup import CatchUp, catch_up
from bench.read.workload import open_projections

IDLE_FRAMES = ("EpollSelector.select", "_worker (concurrent/futures/thread.py:81)", "Condition.wait",
               "Connection._recv", "Event.wait", "TMonitor.run")
PLUMBING = ("<module>", "main (", "run (asyncio", "Runner.run", "BaseEventLoop.", "Handle._run", "Thread.",
            "_worker", "_WorkItem")
HOT = [("runner.py", "apply"), ("admit.py", "store"), ("admit.py", "admitted"), ("chain.py", "problem_with"),
       ("envelope.py", "compute_hash"), ("rfc8785", "dumps"), ("envelope.py", "decode"), ("pg.py", "apply"),
       ("runs.py", "statements"), ("approvals.py", "statements"), ("ch.py", "_apply"), ("ch.py", "live"),
       ("audit.py", "rows"), ("cost.py", "rows"), ("clickhouse.py", "insert"), ("clickhouse.py", "query"),
       ("consumer.py", "getmany"), ("cursor_async.py", "execute"), ("base_events.py", "_run_once")]


async def start_py_spy(args, rate: float):
    """Sample this process (all threads) for the measured window; (process, output path) or None."""
    if not args.py_spy:
        return None
    out = Path(args.workdir) / f"py-spy-{rate:.0f}.raw"
    proc = await asyncio.create_subprocess_exec(
        args.py_spy, "record", "-p", str(os.getpid()), "-d", str(int(args.duration)), "-r", str(args.py_spy_hz),
        "--threads", "--nonblocking", "--format", "raw", "-o", str(out),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    return proc, out


def thread_kind(first: str) -> str:
    if "MainThread" in first:
        return "event loop (MainThread)"
    return "to_thread workers (chdb calls)" if "asyncio_" in first else "other threads"


def py_spy_summary(path: Path, title: str, top: int = 22) -> str:
    """Per thread kind: share of samples not idle, and the frames most often on the stack."""
    kinds: dict[str, tuple[Counter, list[int]]] = {}
    try:
        lines = path.read_text().splitlines()
    except OSError as error:
        return f"{title}: no py-spy output ({error})"
    for line in lines:
        stack, n = line.rsplit(" ", 1)
        frames = stack.split(";")
        inclusive, counts = kinds.setdefault(thread_kind(frames[0]), (Counter(), [0, 0]))
        counts[0] += int(n)
        if not frames[-1].startswith(IDLE_FRAMES):
            counts[1] += int(n)
            inclusive.update({f: int(n) for f in set(frames[1:]) if not f.startswith(PLUMBING)})
    out = io.StringIO()
    out.write(f"=== {title} ===\n")
    for kind, (inclusive, (total, busy)) in kinds.items():
        out.write(f"  {kind}: {busy:,} of {total:,} samples not idle ({100 * busy / max(1, total):.0f}%)\n")
        for frame, n in ([] if kind == "other threads" else inclusive.most_common(top)):
            out.write(f"    {100 * n / max(1, busy):5.1f}% of busy  {frame[:120]}\n")
    return out.getvalue()


def profile_summary(profiler: cProfile.Profile, result: CatchUp, chdb: tuple[int, float], top: int = 18) -> str:
    entries = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
    total = sum(v[2] for v in entries.values()) or 1.0

    def label(key) -> str:
        path, line, func = key
        return f"{func} ({Path(path).name}:{line})" if path != "~" else func
    out = io.StringIO()
    out.write(f"=== cProfile: {result.name} catch-up, {result.window.text()} under the profiler; {total:.2f} s "
              f"profiled; chdb statements in worker threads (not profiled): {chdb[0]:,}, {chdb[1]:.2f} s ===\n"
              "  top by own time:\n")
    for key, (_, calls, own, cum, _) in sorted(entries.items(), key=lambda kv: -kv[1][2])[:top]:
        out.write(f"  {100 * own / total:5.1f}% own {100 * cum / total:5.1f}% cum {calls:>9,}  {label(key)}\n")
    out.write("  selected functions by cumulative time:\n")
    for file_part, func in HOT:
        for key, (_, calls, own, cum, _) in entries.items():
            if key[2] == func and file_part in key[0] and cum / total >= 0.005:
                out.write(f"  {100 * cum / total:5.1f}% cum {100 * own / total:5.1f}% own {calls:>9,}  {label(key)}\n")
    return out.getvalue()


async def profile_catch_up(args, settings, pool, ch, names: list[str], total: int, statements, report, log) -> None:
    """Catch up each named projector again under cProfile, on throw-away read models."""
    profiled = await open_projections(settings, pool, ch, prefix=f"{settings.topic_prefix}_prof")
    for name in names:
        log(f"profile: catch-up of {name} under cProfile")
        started = time.time()
        profiler = cProfile.Profile()
        profiler.enable()
        result = await catch_up(args, settings, profiled[name], total, statements)
        profiler.disable()
        if args.profile_dir:
            profiler.dump_stats(str(Path(args.profile_dir) / f"read-{name}.prof"))
        text = profile_summary(profiler, result, statements.held(started))
        report.data.setdefault("appendix", []).append(text)
