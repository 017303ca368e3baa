"""Phase 5: the processor and a load driver in child processes, the four projectors in this one, as serve runs them.

Per rate (--low-rates first, then --rate, in events/s; the command rate comes from the
events/command measured in the prefill): warm-up, then the measured window, then a drain until
every projector is at lag 0 before the next rate.
"""
from __future__ import annotations

import asyncio
import math
import multiprocessing as mp
import os
import time
from dataclasses import dataclass, field
from typing import Any

from bench.lib.meters import CpuMeter
from bench.lib.tenants import probe_tenants
from bench.lib.topics import EndOffsets
from bench.read.children import driver_child, processor_child
from bench.read.lag import GroupOffsets, HeadProber, LagSampler
from bench.read.observe import ProbeWatch, Statements, StoreLog, Visibility
from bench.read.prefill import until
from bench.read.profile import py_spy_summary, start_py_spy
from bench.read.summary import Measured, summarise
from bench.read.workload import CH_NAMES


@dataclass
class Steady:
    args: Any
    settings: Any
    settings_args: dict
    projections: dict
    pool: Any
    ch: Any
    tenants: list[str]
    events_per_command: float
    statements: Statements
    log: Any
    probes: list[str] = field(default_factory=list)
    visibility: Visibility = field(default_factory=Visibility)
    stored: StoreLog = field(default_factory=StoreLog)
    runners: list = field(default_factory=list)
    ends: EndOffsets | None = None
    committed: GroupOffsets | None = None
    processor_pid: int = 0

    async def start(self) -> None:
        from projectors.runner import ProjectorRunner
        self.probes = probe_tenants(self.tenants, self.settings.partitions)
        self.runners = [ProjectorRunner(self.settings, p) for p in self.projections.values()]
        self.stored.attach(*self.runners)
        if self.args.ch_observe == "watch":
            watch = ProbeWatch(self.visibility, self.probes)
            for runner in self.runners:
                if runner.projection.name in CH_NAMES:
                    watch.attach(runner)
            self.committed = await GroupOffsets(self.args.bootstrap, self.settings.topic_prefix).start()
        self.ends = await EndOffsets(self.settings).start()

    def sampler(self) -> LagSampler:
        return LagSampler(self.ends, self.projections, self.pool, self.ch, self.committed, 0.1)

    def prober(self) -> HeadProber:
        ch_every = None if self.committed else self.args.ch_probe_every
        return HeadProber(self.visibility, self.projections, self.ch, self.settings.database_url, self.probes,
                          self.args.probe_ms / 1000, ch_every)

    def meter(self, **more: int) -> CpuMeter:
        groups = {"projectors (this process)": os.getpid(), "processor": self.processor_pid, **more}
        return CpuMeter.with_stack(groups, self.args.stack_home)

    async def stop(self) -> None:
        for closer in (self.ends, self.committed):
            if closer:
                await closer.stop()


async def drain(steady: Steady, timeout_s: float) -> bool:
    """Wait until the log stops growing and every projector's lag is 0; False on timeout."""
    sampler = steady.sampler()
    deadline = time.monotonic() + timeout_s
    last, still_since = None, time.monotonic()
    while time.monotonic() < deadline:
        if failed := [r.failed for r in steady.runners if r.failed]:
            raise RuntimeError(f"a projector stopped: {failed}")
        ends = await steady.ends()
        if ends != last:
            last, still_since = ends, time.monotonic()
        if not any((await sampler.sample()).values()) and time.monotonic() - still_since > 1.0:
            return True
        await asyncio.sleep(0.1)
    return False


async def observe_window(steady: Steady, driver, parent, phase: str, rate: float) -> Measured:
    """Run the driver's window with the lag observers; drain afterwards."""
    args = steady.args
    ready = await asyncio.to_thread(parent.recv)
    start_events, start_replies = await steady.ends(), await steady.ends(steady.settings.replies_topic)
    stop, sampler, prober = asyncio.Event(), steady.sampler(), steady.prober()
    observers = [asyncio.create_task(sampler.run(stop)), asyncio.create_task(prober.run(stop))]
    steady.log(f"{phase}: go ({ready[1]:,} commands)")
    parent.send("go")
    await asyncio.sleep(args.warmup)
    spy = await start_py_spy(args, rate)
    meter = steady.meter(driver=driver.pid, **({"py-spy": spy[0].pid} if spy else {}))
    calls0 = (sampler.ch.seconds + prober.ch.seconds, sampler.ch.calls + prober.ch.calls)
    sent = await asyncio.to_thread(parent.recv)
    cpu = meter.stop()
    calls = (sampler.ch.seconds + prober.ch.seconds - calls0[0], sampler.ch.calls + prober.ch.calls - calls0[1])
    steady.log(f"{phase}: all commands sent; draining")
    drained = await drain(steady, args.drain_timeout)
    polls = prober.polls  # let the probe see the drained state before it stops
    await until(lambda: prober.polls >= polls + 2, 30, "a last probe poll")
    stop.set()
    await asyncio.gather(*observers)
    span = (sent["start_wall"] + args.warmup, sent["start_wall"] + sent["sent_s"])
    return Measured(sent, cpu, drained, span, start_events, start_replies, sampler, prober, calls, spy)


async def window(steady: Steady, rate_events: float, seed: int, report) -> None:
    args = steady.args
    phase = f"steady @ {rate_events:,.0f} ev/s"
    rate_cmd = rate_events / steady.events_per_command
    count = math.ceil(rate_cmd * (args.warmup + args.duration))
    steady.log(f"{phase}: building {count:,} commands in the driver ({rate_cmd:,.0f} commands/s for "
               f"{args.warmup:g}+{args.duration:g} s)")
    spawn = mp.get_context("spawn")
    parent, child_end = spawn.Pipe()
    driver = spawn.Process(target=driver_child, name="rb-driver",
                           args=(steady.settings_args, steady.tenants, seed, rate_cmd, count, child_end))
    driver.start()
    try:
        measured = await observe_window(steady, driver, parent, phase, rate_events)
    finally:
        driver.join(30)
        if driver.is_alive():
            driver.terminate()
    await summarise(steady, phase, rate_events, rate_cmd, measured, report)
    if measured.spy:
        await measured.spy[0].wait()
        text = py_spy_summary(measured.spy[1], f"{phase}: py-spy of the projector process over the window")
        report.data.setdefault("appendix", []).append(text)


async def steady_phase(steady: Steady, report) -> None:
    spawn = mp.get_context("spawn")
    ready, stop, results = spawn.Event(), spawn.Event(), spawn.Queue()
    child = spawn.Process(target=processor_child, args=(steady.settings_args, ready, stop, results), name="rb-processor")
    child.start()
    steady.processor_pid = child.pid
    await steady.start()
    halt = asyncio.Event()
    tasks = [asyncio.create_task(r.run(halt), name=f"projector-{r.projection.name}") for r in steady.runners]
    try:
        steady.log("steady: starting the processor child (it replays the prefilled log first)")
        await until(lambda: ready.is_set() or not child.is_alive(), 600, "the processor child", 0.2)
        if not child.is_alive():
            raise RuntimeError("the processor child died during start-up")
        await drain(steady, 120)
        for n, rate in enumerate(r for r in (*steady.args.low_rates, steady.args.rate) if r):
            await window(steady, rate, steady.args.seed + 1000 + n, report)
    finally:
        stop.set()
        halt.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        await steady.stop()
        child.join(60)
        stats = results.get(timeout=5) if not results.empty() else None
        if child.is_alive():
            child.terminate()
        if stats and stats.get("broken"):
            report.errors.append(f"steady: processor partitions broke: {stats['broken']}")
