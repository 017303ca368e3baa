"""The broker under `runledger serve`, idle and under a light load: requests per second per client, CPU, JFR.

`python -m bench.kafka.broker [--quick|--smoke]` (docs/bench-kafka.md, part 2). It always runs on
a stack of its own (infra/local/stack.sh in a temporary home, on free ports; never the shared
broker), with DebugNonSafepoints so JFR attributes samples to the right methods, and stops it
afterwards. First `serve` runs under the load for a warm-up (the broker's JIT); then windows, in
order, each with nothing else of this benchmark changing: `serve` idle (CPU, then a JFR
recording, then a request count); `serve` under R commands/s over HTTP (the same three); the fetch
settings sweep (bench/kafka/waits.py); the broker alone. CPU windows have neither JFR nor the
request logger running.
"""
from __future__ import annotations

import asyncio
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from bench.kafka.jfr import Recording, hot_text, settings_file
from bench.kafka.requestlog import Counting, Traffic
from bench.kafka.serving import Serving
from bench.kafka.waits import CONSUMERS, TRICKLE, Wait, sweep
from bench.lib import cli, host
from bench.lib.measure import Dist, Window, fmt_ms
from bench.lib.meters import CpuMeter, stack_pid
from bench.lib.procs import stack_ports
from bench.lib.report import Report
from bench.lib.stack import stack

log = cli.logger("bench kafka.broker")
SIZES: cli.Sizes = {
    "full": {"window": 15.0, "count_s": 6.0, "settle_s": 8.0, "warmup_s": 25.0},
    "quick": {"window": 8.0, "count_s": 4.0, "settle_s": 4.0, "warmup_s": 10.0},
    "smoke": {"window": 2.0, "count_s": 2.0, "settle_s": 1.0, "warmup_s": 2.0},
}
JVM_OPTS = "-Xms256m -Xmx1g -XX:+UnlockDiagnosticVMOptions -XX:+DebugNonSafepoints"


def parse_args(argv: list[str] | None = None):
    p = cli.parser("python -m bench.kafka.broker", "broker CPU and requests per client under runledger serve")
    p.add_argument("--window", type=float, help="seconds of each CPU and JFR window (" + cli.size_help(SIZES, "window") + ")")
    p.add_argument("--count-s", type=float, help="seconds of each request-count window")
    p.add_argument("--settle-s", type=float, help="seconds let pass before measuring (JIT, group joins, load ramp)")
    p.add_argument("--warmup-s", type=float, help="seconds of load before any window (JIT)")
    p.add_argument("--rate", type=float, default=50.0, help="commands/s over HTTP in the load phase (50)")
    p.add_argument("--partitions", type=int, default=6)
    p.add_argument("--tenants", type=int, default=12)
    return cli.sized(p.parse_args(argv), SIZES)


def own_env(home: Path) -> dict[str, str]:
    """stack.sh's environment for a home of this run's own, on a free broker/controller pair and PostgreSQL port."""
    kafka, pg = stack_ports()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNLEDGER_")}
    return {**env, "RUNLEDGER_HOME": str(home), "RUNLEDGER_KAFKA_PORT": str(kafka),
            "RUNLEDGER_KAFKA_CONTROLLER_PORT": str(kafka + 1), "RUNLEDGER_PG_PORT": str(pg),
            "RUNLEDGER_KAFKA_HEAP_OPTS": JVM_OPTS}


@dataclass
class Phase:
    name: str
    cpu: dict[str, float]
    seconds: float
    traffic: Traffic | None = None
    jfr: str | None = None
    transactions: int = 0
    commands: int = 0
    latency: Dist | None = None


class Run:
    def __init__(self, args, workdir: Path, home: Path):
        self.args, self.workdir, self.home = args, workdir, home
        self.broker = stack_pid(str(home), "kafka")
        self.jfc = settings_file(workdir)
        self.prefix = "benchkb"

    async def cpu(self, serve: int | None) -> dict[str, float]:
        meter = CpuMeter({"broker": self.broker, "serve": serve, "bench client": os.getpid()})
        await asyncio.sleep(self.args.window)  # the measuring window
        return meter.stop()

    async def jfr(self, name: str) -> str:
        path = self.workdir / f"broker-{name}.jfr"
        async with Recording(self.broker, path, name, self.jfc) as recording:
            await asyncio.sleep(self.args.window)
        return await asyncio.to_thread(hot_text, f"broker, {name}", path, recording.threads, self.args.window)

    async def count(self) -> Traffic:
        async with Counting(self.args.bootstrap, self.home / "kafka.log", self.prefix) as counting:
            await asyncio.sleep(self.args.count_s)
        return counting.traffic

    async def phase(self, name: str, serving: Serving | None) -> Phase:
        log(f"{name}: CPU {self.args.window:g} s, JFR {self.args.window:g} s, request count {self.args.count_s:g} s")
        before = serving.stats() if serving else {}
        cpu = await self.cpu(serving.pid if serving else None)
        after = serving.stats() if serving else {}
        phase = Phase(name, cpu, self.args.window, transactions=after.get("transactions", 0) - before.get("transactions", 0),
                      commands=after.get("commands", 0) - before.get("commands", 0))
        phase.jfr = await self.jfr(name.split(" ")[0])
        phase.traffic = await self.count()
        return phase

    async def loaded(self, serving: Serving) -> Phase:
        a = self.args
        load = serving.load(a.rate, a.settle_s + 2 * a.window + a.count_s + 8)  # covers every window and its set-up
        await asyncio.sleep(a.settle_s)
        phase = await self.phase(f"load {a.rate:g} commands/s", serving)
        samples = await load
        phase.latency = Dist.of([s.latency_ms for s in samples if s.ok])
        errors = sum(1 for s in samples if not s.ok)
        if errors:
            raise RuntimeError(f"{errors} of {len(samples)} commands failed under load")
        return phase


def traffic_rows(report: Report, phase: Phase) -> None:
    t = phase.traffic
    report.info(phase.name, "requests/s to the broker (all clients)",
                Window(t.total, t.seconds, "requests").rate_text() + f"; fetches {t.of('FETCH') / t.seconds:,.1f}/s")
    for kind, n in t.counts.most_common(12):
        report.info(phase.name, f"{kind}", f"{n / t.seconds:,.1f}/s from {len(t.connections[kind])} connection(s); "
                                           f"broker local+queue time {t.broker_ms[kind] / n:.3f} ms each")


def rows(report: Report, alone: Phase, idle: Phase, load: Phase) -> None:
    for phase in (alone, idle, load):
        report.info(phase.name, "cores (broker / serve / machine)",
                    f"{phase.cpu['broker']:.3f} / {phase.cpu.get('serve', 0):.3f} / {phase.cpu['machine']:.2f} "
                    f"over {phase.seconds:g} s; others {phase.cpu['others']:.2f}")
        traffic_rows(report, phase)
    fetches = idle.traffic.total / idle.traffic.seconds - alone.traffic.total / alone.traffic.seconds
    per_request = (idle.cpu["broker"] - alone.cpu["broker"]) / fetches * 1e6 if fetches > 0 else float("nan")
    report.info("per request", "broker CPU per idle request (mostly fetches), µs",
                f"{per_request:,.0f} = (idle {idle.cpu['broker']:.3f} − alone {alone.cpu['broker']:.3f} cores) "
                f"/ {fetches:,.1f} requests/s")
    tps = load.transactions / load.seconds
    if tps > 0:
        extra = load.cpu["broker"] - idle.cpu["broker"]
        report.info("per transaction", "broker CPU per transaction, ms",
                    f"{extra / tps * 1000:.2f} above idle, {load.cpu['broker'] / tps * 1000:.2f} gross "
                    f"({load.transactions:,} transactions, {load.commands:,} commands in {load.seconds:g} s = "
                    f"{tps:.1f}/s)")
    if load.latency:
        report.info(load.name, "command latency over HTTP, ms",
                    f"p50 {fmt_ms(load.latency.p50)}, p99 {fmt_ms(load.latency.p99)} ({load.latency.n:,} commands)")


def wait_rows(report: Report, waits: list[Wait], alone: Phase) -> None:
    phase = f"{CONSUMERS} idle consumers + {TRICKLE:g} rec/s"
    for w in waits:
        extra = w.broker_cores - alone.cpu["broker"]
        per = extra / w.fetches_per_s * 1e6 if w.fetches_per_s > 0 else float("nan")
        report.info(phase, w.label,
                    f"fetches {w.fetches_per_s:,.1f}/s, broker {w.broker_cores:.3f} cores ({per:,.0f} µs per fetch above "
                    f"alone); delivery p50 {fmt_ms(w.latency.p50)} ms, p99 {fmt_ms(w.latency.p99)} ms "
                    f"({w.latency.n:,} deliveries)")


async def measure(args, workdir: Path, home: Path, report: Report) -> None:
    run = Run(args, workdir, home)
    serving = Serving(args, run.prefix, workdir)
    try:
        await serving.start(report)
        log(f"warm-up: {args.rate:g} commands/s for {args.warmup_s:g} s (the fresh broker's JIT compiles the "
            "transaction and fetch paths; measured, it is 0.1-0.35 cores of C2 compiler threads)")
        await serving.load(args.rate, args.warmup_s)
        await asyncio.sleep(args.settle_s)
        idle = await run.phase("serve idle", serving)
        load = await run.loaded(serving)
    finally:
        await serving.stop(report)
    log(f"fetch settings sweep: {args.window:g} s each")
    waits = await sweep(run)
    alone = await run.phase("alone (no clients)", None)
    rows(report, alone, idle, load)
    wait_rows(report, waits, alone)
    report.data.setdefault("appendix", []).extend(p.jfr for p in (alone, idle, load) if p.jfr)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started, load_before = datetime.now(timezone.utc), host.load_text()
    workdir = Path(tempfile.mkdtemp(prefix="rlbenchk-"))
    os.chmod(workdir, 0o755)  # PostgreSQL runs as its own user and must reach its data directory
    home = workdir / "stack"
    home.mkdir(mode=0o755)
    env = own_env(home)
    args.bootstrap = f"127.0.0.1:{env['RUNLEDGER_KAFKA_PORT']}"
    args.database_url = f"postgresql://runledger:runledger@127.0.0.1:{env['RUNLEDGER_PG_PORT']}/runledger"
    report = Report()
    if note := host.busy_note():
        report.notes.append(note)
    log(f"own stack in {home} (broker {args.bootstrap})")
    try:
        if stack("up", env) != 0:
            raise RuntimeError(f"stack.sh up failed in {home}")
        asyncio.run(measure(args, workdir, home, report))
    except Exception as error:  # noqa: BLE001 - reported; exit status 1
        report.errors.append(f"broker bench failed: {error!r}")
    finally:
        if not args.keep:
            stack("down", env)  # this run's own home and ports only (env above), never the shared stack's
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            report.notes.append(f"kept {workdir} (stack still running: stack.sh down with RUNLEDGER_HOME={home})")
    cli.print_report("runledger broker under serve", started, load_before, report,
                     f"own broker {args.bootstrap}; windows {args.window:g} s (CPU, JFR), {args.count_s:g} s (requests); "
                     f"load {args.rate:g} commands/s over HTTP, {args.tenants} tenants, {args.partitions} partitions")
    if args.json:
        report.write_json(args.json, started=started.isoformat(), machine=host.machine(), code=host.git_state())
    return 1 if report.errors else 0


if __name__ == "__main__":
    sys.exit(main())
