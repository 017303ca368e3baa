"""Phases 3-4: each projector from offset 0 to lag 0 (a ProjectorRunner), and replay_into a fresh generation.

Catch-up is timed from the runner's start until it has stored every event (confirmed with
queries.lag.projector_lag = 0). Start-up (consumer start, group join, positions: until the first
poll is stored) is shown apart, and the time inside the runner's store (admission's decode and
verify plus the projection's apply) comes from ProjectorRunner.on_applied. replay_into has no such
hook, so a rebuild row shows no store time; for chdb projections both show the seconds chdb
statements held its lock (the adapter's on_statement).
"""
from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass

from bench.lib.measure import Window
from bench.lib.meters import CpuMeter, cpu_text
from bench.read.observe import Statements, StoreLog
from bench.read.workload import CH_NAMES, PG_NAMES

TARGETS = {"pg_events_s": 30_000, "ch_events_s": 100_000}


@dataclass
class CatchUp:
    name: str
    window: Window                 # events over the whole run, start-up included
    startup_s: float
    first_poll: int
    store_s: float | None          # inside the runner's store; None where no hook tells it
    chdb: tuple[int, float] | None  # (statements, seconds holding chdb's lock)
    cpu: dict[str, float]

    @property
    def after_startup(self) -> Window:
        return Window(self.window.count - self.first_poll, self.window.seconds - self.startup_s)


async def run_to(runner, task: asyncio.Task, total: int, deadline: float) -> None:
    while runner.applied < total:
        if task.done() or runner.failed:
            raise RuntimeError(f"{runner.projection.name} stopped: {runner.failed or task.exception()!r}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{runner.projection.name}: {runner.applied}/{total} before the deadline")
        await asyncio.sleep(0.005)


async def lag_zero(settings, projection, deadline: float) -> None:
    from queries.lag import projector_lag
    while any(r.lag_events for r in await projector_lag(settings, [projection])):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{projection.name} applied everything but its lag is not 0")
        await asyncio.sleep(0.05)


async def catch_up(args, settings, projection, total: int, statements: Statements) -> CatchUp:
    """Run a ProjectorRunner from the projection's stored position until it has stored `total` events."""
    from projectors.runner import ProjectorRunner

    runner = ProjectorRunner(settings, projection)
    store = StoreLog().attach(runner)
    stop, deadline = asyncio.Event(), time.monotonic() + args.catch_up_timeout
    meter = CpuMeter.with_stack({"this process": os.getpid()}, args.stack_home)
    started = time.time()
    task = asyncio.create_task(runner.run(stop), name=f"catch-up-{projection.name}")
    try:
        await run_to(runner, task, total, deadline)
        cpu = meter.stop()
        await lag_zero(settings, projection, deadline)
        ended = time.time()
    finally:
        stop.set()
        await asyncio.gather(task, return_exceptions=True)
    polls = store.of(projection.name)
    first_at, first_n = (polls[0][0], polls[0][1]) if polls else (ended, 0)
    return CatchUp(projection.name, Window(runner.applied, ended - started), first_at - started, first_n,
                   sum(s for _, _, s in polls), chdb_of(projection.name, statements, started, ended), cpu)


def chdb_of(name: str, statements: Statements, t0: float, t1: float) -> tuple[int, float] | None:
    return statements.held(t0, t1) if name in CH_NAMES else None


async def rebuild_into_fresh(args, settings, live, statements: Statements) -> CatchUp:
    from projectors.rebuild import replay_into

    target = await live.fresh_generation(await live.live_generation() + 1)
    meter = CpuMeter.with_stack({"this process": os.getpid()}, args.stack_home)
    started = time.time()
    applied = await replay_into(settings, target)
    ended = time.time()
    return CatchUp(live.name, Window(applied, ended - started), 0.0, 0, None,
                   chdb_of(live.name, statements, started, ended), meter.stop())


def report_row(report, phase: str, what: str, result: CatchUp) -> None:
    target, store = ((TARGETS["pg_events_s"], "PostgreSQL") if result.name in PG_NAMES
                     else (TARGETS["ch_events_s"], "ClickHouse/chdb"))
    parts = []
    if result.startup_s and result.first_poll < result.window.count:
        parts.append(f"start-up {result.startup_s:.2f} s, then {result.after_startup.rate_text()}")
    elif result.startup_s:
        parts.append(f"start-up {result.startup_s:.2f} s; the first poll stored everything")
    if result.store_s is not None:
        parts.append(f"in the runner's store {result.store_s:.2f} s")
    if result.chdb:
        parts.append(f"chdb lock held {result.chdb[1]:.2f} s by {result.chdb[0]:,} statements")
    parts.append(f"CPU {cpu_text(result.cpu)}")
    report.rate(phase, f"{result.name} ({store}) {what} (events/s)", result.window, target, "; ".join(parts))


async def catch_up_phase(args, settings, projections: dict, total: int, statements: Statements, report, log) -> None:
    for name, projection in projections.items():
        log(f"catch-up: {name} from offset 0 over {total:,} events")
        result = await catch_up(args, settings, projection, total, statements)
        report.data.setdefault("catch_up", {})[name] = vars(result)
        report_row(report, "catch-up", "from start to lag 0", result)
    for name in ("runs", "audit"):
        log(f"rebuild: replay_into a fresh {name} generation")
        result = await rebuild_into_fresh(args, settings, projections[name], statements)
        report.data.setdefault("rebuild", {})[name] = vars(result)
        report_row(report, "rebuild", "replay_into a fresh generation", result)
