"""Phase 5: `serve` layouts (or the echo floor) driven open-loop over HTTP by one client per tenant."""
from __future__ import annotations

import asyncio
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from bench.lib.measure import Dist, Window
from bench.lib.meters import CpuMeter, memory_mb
from bench.lib.procs import Child, free_port, python_argv
from bench.lib.tenants import spread_tenants
from bench.lib.topics import bench_settings
from bench.write.load import HttpMix, Sample, drive_open_loop, http_client
from bench.write.workload import serve_env
from infra.adapters.http.auth import mint
from infra.adapters import kafka


@dataclass(frozen=True)
class Layout:
    projectors: bool
    split: bool
    floor: bool = False
    variant: str = ""  # a telemetry variant (bench/write/telemetry.py): its own log files and label

    @property
    def mode(self) -> str:
        if self.floor:
            return "floor"
        mode = f"{'split' if self.split else 'one'}-{'with' if self.projectors else 'no'}-projectors"
        return f"{mode}-{self.variant}" if self.variant else mode

    @property
    def label(self) -> str:
        if self.floor:
            return "floor: echo endpoint, no Kafka"
        more = "+projectors" if self.projectors else ""
        shape = f"split: API{more} and processor in 2 processes" if self.split else f"API+processor{more}"
        return f"{shape}, {self.variant}" if self.variant else shape


def layouts(args) -> list[Layout]:
    """The layouts --http-projectors/--http-layout ask for (with both, split runs without projectors only)."""
    projectors = {"off": [False], "on": [True], "both": [False, True]}[args.http_projectors]
    splits = {"one": [False], "split": [True], "both": [False, True]}[args.http_layout]
    out = [Layout(p, s) for p in projectors for s in splits if not (p and s and len(projectors) > 1)]
    return (out if args.database_url else []) + ([Layout(False, False, True)] if args.http_floor else [])


def start_servers(args, layout: Layout, settings, workdir: Path, port: int, report,
                  extra_env: dict[str, str | None] | None = None) -> list[Child]:
    if layout.floor:
        return [Child("echo-floor", python_argv("bench.write.echo", str(port)), dict(os.environ), workdir)]
    profile = None
    if args.profile_http:
        profile = args.profile_http.with_name(f"{args.profile_http.stem}-{layout.mode}{args.profile_http.suffix}")
        report.data.setdefault("http_profiles", []).append(str(profile))
    env = serve_env(settings, workdir, {"RUNLEDGER_API_PORT": str(port), "RUNLEDGER_DATABASE_URL": args.database_url,
                                        **(extra_env or {})})
    options = ([] if layout.projectors else ["--no-projectors"]) + (["--no-processor"] if layout.split else [])
    children = [Child(f"serve-{layout.mode}", python_argv(args.serve_entry, "serve", *options, profile=profile),
                      env, workdir)]
    if layout.split:
        children.append(Child(f"processor-{layout.mode}",
                              python_argv(args.serve_entry, "serve", "--no-api", "--no-projectors"), env, workdir))
    return children


async def healthy(port: int, children: list[Child], timeout: float) -> None:
    import httpx
    deadline, last = time.monotonic() + timeout, None
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5.0) as http:
        while time.monotonic() < deadline:
            for child in children:
                child.check()
            try:
                response = await http.get("/healthz")
                if response.status_code == 200:
                    return
                last = response.text
            except Exception as error:  # noqa: BLE001 - not up yet
                last = repr(error)
            await asyncio.sleep(0.2)
    raise RuntimeError(f"serve not healthy after {timeout}s (last: {last}):\n{children[0].tail()}")


async def every_partition_owned(clients, children: list[Child], tenants: list[str], partitions: int,
                                timeout: float) -> None:
    """Until one command per partition is accepted: every partition owned, fenced and rebuilt."""
    probes: dict[int, str] = {}
    for tenant in tenants:
        probes.setdefault(kafka.partition_for(tenant, partitions), tenant)

    async def accepted(tenant: str) -> bool:
        try:
            body = {"type": "RequestRun", "agent_id": "bench-probe", "project": "probe"}
            return (await clients[tenant].send(body)).accepted
        except Exception:  # noqa: BLE001 - not ready yet (e.g. 504 outcome_pending)
            return False
    waiting, deadline = set(probes.values()), time.monotonic() + timeout
    while waiting and time.monotonic() < deadline:
        for child in children:
            child.check()
        results = await asyncio.gather(*(accepted(t) for t in sorted(waiting)))
        waiting = {t for t, ok in zip(sorted(waiting), results) if not ok}
        if waiting:
            await asyncio.sleep(0.5)
    if waiting:
        raise RuntimeError(f"no command accepted for {sorted(waiting)} within {timeout}s:\n{children[-1].tail()}")


@dataclass
class HttpResult:
    latency: Dist       # of the accepted commands, ms from the scheduled send
    window: Window      # commands sent over the measured seconds
    errors: int
    error_kinds: dict[str, int]
    max_send_lag_ms: float
    mix: dict[str, int]
    cpu: dict[str, float]
    rss_mb: dict[str, float | None]
    latencies_ms: list[float] = field(default_factory=list, repr=False)  # the accepted ones, to pool runs


def result_of(samples: list[Sample], cpu: dict, rss: dict) -> HttpResult:
    span = max(s.sent_at for s in samples) - min(s.sent_at for s in samples)
    errors = [s for s in samples if not s.ok]
    latencies = [s.latency_ms for s in samples if s.ok]
    return HttpResult(Dist.of(latencies), Window(len(samples), span, "commands"),
                      len(errors), dict(Counter(s.error for s in errors)), max(s.lag_ms for s in samples),
                      dict(Counter(s.kind for s in samples)), cpu, rss, latencies)


async def measure(args, clients, tenants: list[str], children: list[Child],
                  watch: dict[str, int] | None = None) -> HttpResult:
    mix = HttpMix(tenants)
    await drive_open_loop(clients, mix, args.http_rate, args.http_warmup)
    meter = CpuMeter.with_stack({**{c.name.split("-")[0]: c.pid for c in children}, "bench client": os.getpid(),
                                 **(watch or {})}, args.stack_home)
    samples = await drive_open_loop(clients, mix, args.http_rate, args.http_duration)
    return result_of(samples, meter.stop(), {c.name.split("-")[0]: memory_mb(c.pid, "VmHWM") for c in children})


async def phase_http(args, prefix: str, secret: str, workdir: Path, layout: Layout, report, log,
                     extra_env: dict[str, str | None] | None = None, watch: dict[str, int] | None = None) -> HttpResult:
    """Start the layout's servers (`extra_env` added to their environment), load them, measure (CPU of `watch` too)."""
    from infra.entry.client import LedgerClient

    port = args.http_port or free_port()
    settings = bench_settings(args.bootstrap, prefix, args.partitions, secret)
    if not layout.floor:
        await kafka.ensure_topics(settings)
    children = start_servers(args, layout, settings, workdir, port, report, extra_env)
    tenants = spread_tenants(args.tenants, args.partitions, "bench-t")
    https = {t: http_client(args.http_client, port) for t in tenants}
    try:
        clients = {t: LedgerClient(https[t], mint(secret, t, f"agent:{t}", ["operator"], settings.jwt_audience))
                   for t in tenants}
        await healthy(port, children, 90)
        await every_partition_owned(clients, children, tenants, args.partitions, 90)
        log(f"phase 5: {layout.mode} up on port {port}; warm-up {args.http_warmup}s then "
            f"{args.http_duration}s at {args.http_rate:g}/s")
        return await measure(args, clients, tenants, children, watch)
    finally:
        await asyncio.gather(*(h.aclose() for h in https.values()), return_exceptions=True)
        for child in children:
            if not child.stopped_cleanly():
                report.errors.append(f"{child.name} exited with status {child.proc.returncode}; log: {child.log_path}")
