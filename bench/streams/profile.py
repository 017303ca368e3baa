"""Where the API server's time went in a profiled window (--profile): own time by component, hot functions."""
from __future__ import annotations

import io
import pstats
from pathlib import Path

from bench.lib.procs import ROOT

IDLE = ("<method 'poll' of 'select.epoll' objects>", "<method 'select' of 'select.epoll' objects>")
WANTED = ("streams/", "projectors/", "queries/", "commands/", "infra/", "sse_starlette/", "h11", "uvicorn/",
          "anyio/", "psycopg", "json/", "starlette/", "fastapi/", "aiokafka/")

COMPONENTS = (
    ("socket send/recv syscalls", ("<method 'send' of '_socket", "<method 'recv' of '_socket",
                                   "<method 'recv_into' of '_socket")),
    ("sse_starlette", ("sse_starlette/",)),
    ("anyio", ("anyio/",)),
    ("h11 + uvicorn", ("h11/", "uvicorn/")),
    ("starlette + fastapi middleware/routing", ("starlette/", "fastapi/")),
    ("opentelemetry", ("opentelemetry/",)),
    ("psycopg + pool", ("psycopg",)),
    ("json", ("/json/", "json.")),
    ("aiokafka", ("aiokafka/",)),
    ("asyncio event loop, tasks, queues", ("/asyncio/", "_asyncio", "_contextvars", "<method 'run' of 'Context")),
    ("re / regex", ("re.Pattern", "/re/")),
)


def component(key) -> str:
    text = f"{key[0]}:{key[2]}"
    if key[0].startswith(str(ROOT) + "/") and "site-packages" not in key[0]:
        return "runledger streams/" if key[0].startswith(str(ROOT / "streams")) else "runledger (other modules)"
    for name, marks in COMPONENTS:
        if any(m in text for m in marks):
            return name
    return "other (builtins, stdlib)"


def short_name(key) -> str:
    filename, line, func = key
    short = filename.replace(str(ROOT) + "/", "")
    if "site-packages/" in short:
        short = short.split("site-packages/", 1)[1]
    elif "/lib/python3" in short:
        short = "stdlib/" + short.split("/lib/python3", 1)[1].split("/", 1)[-1]
    return f"{short}:{line}({func})" if line else func


def by_component(entries: dict, busy: float, out: io.StringIO) -> None:
    parts: dict[str, float] = {}
    for key, v in entries.items():
        if key[2] not in IDLE:
            parts[component(key)] = parts.get(component(key), 0.0) + v[2]
    for part, seconds in sorted(parts.items(), key=lambda kv: kv[1], reverse=True):
        if seconds / busy >= 0.005:
            out.write(f"  {seconds / busy * 100:5.1f}%  {seconds:7.2f}s  {part}\n")


def by_cumulative(entries: dict, busy: float, total: float, top: int, out: io.StringIO) -> None:
    shown = 0
    for key, v in sorted(entries.items(), key=lambda kv: kv[1][3], reverse=True):
        where = short_name(key)
        if v[3] > 0.9 * total or not where.startswith(WANTED) or "infra/cli" in where or "infra/bootstrap" in where:
            continue
        out.write(f"  {min(999.9, v[3] / busy * 100):5.1f}%  {v[3]:7.2f}s  {v[1]:>9,} calls  {where}\n")
        shown += 1
        if shown >= top:
            break


def profile_summary(path: Path, top: int) -> str:
    """Top functions by own time, as a share of the busy (non-epoll) time, and by cumulative."""
    entries = pstats.Stats(str(path)).stats  # type: ignore[attr-defined]
    total = sum(v[2] for v in entries.values())
    idle = sum(v[2] for k, v in entries.items() if k[2] in IDLE)
    busy = max(1e-9, total - idle)
    out = io.StringIO()
    out.write(f"cProfile of the API server: {total:.1f} s profiled, {idle:.1f} s idle in epoll, "
              f"{busy:.1f} s busy\n\nown time by component (% of busy):\n")
    by_component(entries, busy, out)
    out.write("\nby own time (% of busy):\n")
    for key, v in sorted(entries.items(), key=lambda kv: kv[1][2], reverse=True)[:top]:
        if v[2] and key[2] not in IDLE:
            out.write(f"  {v[2] / busy * 100:5.1f}%  {v[2]:7.2f}s  {v[1]:>9,} calls  {short_name(key)}\n")
    out.write("\nby cumulative time, project and SSE/HTTP-stack frames (% of busy; nested, so they overlap):\n")
    by_cumulative(entries, busy, total, top, out)
    return out.getvalue()
