"""Phase 1: N subscribers of one tenant's stream, all resuming after the same Last-Event-ID, while
RequestRun commands are POSTed open-loop at each rate; a one-subscriber baseline first.

Latency = receipt time at the client − the event's recorded_at, so it spans processor → Kafka →
channels projector → PostgreSQL → NOTIFY → hub → SSE write → client.
"""
from __future__ import annotations

import array
import asyncio
import os
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from bench.lib.measure import Dist, Window, fmt_ms
from bench.lib.meters import CpuMeter, cpu_text, memory_mb
from bench.streams.worker import Client

TARGETS = {"subscribers": 10_000, "p99_ms": 250.0}


@dataclass
class Fan:
    """What the fan-out's steps share: the run's options, servers, HTTP and tokens."""
    args: Any
    servers: Any
    mp: Any
    commands: Any
    log: Any
    writer: str = ""
    watcher: str = ""
    segments: list[dict] = field(default_factory=list)

    def meter(self, clients: list[Client]) -> CpuMeter:
        groups = {**self.servers.pids(), "bench": os.getpid(), **{c.name: c.pid for c in clients}}
        return CpuMeter.with_stack(groups, self.args.stack_home)


async def post_open_loop(fan: Fan, rate: float, duration: float) -> dict:
    """POST RequestRun commands at t0 + i/rate until accepted; return what happened."""
    total = max(1, int(round(rate * duration)))
    results, took, late = [], [], []
    retries_before = len(fan.commands.retries)
    t0 = time.perf_counter() + 0.2

    async def one(i: int) -> None:
        delay = t0 + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        else:
            late.append(-delay)
        sent = time.perf_counter()
        results.append(await fan.commands.send(fan.writer, {"type": "RequestRun", "agent_id": f"a{i % 50}"}))
        took.append(time.perf_counter() - sent)
    await asyncio.gather(*(one(i) for i in range(total)))
    retries = fan.commands.retries[retries_before:]
    return {"commands": total, "send_s": time.perf_counter() - t0,
            "high": max(r["events"][-1]["chain_seq"] for r in results if r.get("events")),
            "events": sum(len(r.get("events") or ()) for r in results), "late_max_s": max(late, default=0.0),
            "post": Dist.of(t * 1000 for t in took), "post_retries": len(retries),
            "post_retry_reasons": sorted(set(retries))[:3]}


async def drain(fan: Fan, clients: list[Client], high: int) -> tuple[float, int]:
    """Until every live subscriber has event `high` (or --drain-timeout); return (seconds, live)."""
    await asyncio.gather(*(c.ask("target", target=high) for c in clients))
    started = last_log = time.perf_counter()
    while True:
        fan.servers.check()
        progress = await asyncio.gather(*(c.ask("progress") for c in clients))
        lows = [p["min_last"] for p in progress if p["min_last"] is not None]
        live = sum(p["live"] for p in progress)
        if not live or min(lows) >= high:
            return time.perf_counter() - started, live
        if time.perf_counter() - started > fan.args.drain_timeout:
            fan.log(f"fan-out: drain timeout: slowest subscriber at {min(lows)} of {high}")
            return time.perf_counter() - started, live
        if time.perf_counter() - last_log > 5:
            fan.log(f"fan-out: draining, slowest subscriber at id {min(lows)} of {high}")
            last_log = time.perf_counter()
        await asyncio.sleep(0.1)


async def segment(fan: Fan, clients: list[Client], rate: float, duration: float, low: int) -> dict:
    meter = fan.meter(clients)
    seg = await post_open_loop(fan, rate, duration)
    seg["drain_s"], seg["live"] = await drain(fan, clients, seg["high"])
    return {**seg, "rate": rate, "duration": duration, "low": low, "cpu": meter.stop(),
            "rss_mb": memory_mb(fan.servers.api.pid)}


def latencies(finals: list[dict], low: int, high: int) -> Dist:
    """Delivery latencies (ms) of events low < id <= high, over every subscriber of every client."""
    values = []
    for final in finals:
        ids, lat = array.array("I"), array.array("d")
        ids.frombytes(final["ids"])
        lat.frombytes(final["lat"])
        values.extend(v * 1000.0 for i, v in zip(ids, lat) if low < i <= high)
    return Dist.of(values)


async def baseline(fan: Fan, head: int, report) -> int:
    """The same load with one subscriber: the pipeline's own latency, to read the fan-out rows against."""
    rate, seconds = max(fan.args.rates), fan.args.baseline_duration
    client = Client(fan.mp, "baseline-client", "127.0.0.1", fan.servers.port)
    try:
        opened = await client.ask("open", count=1, path="/v1/streams/tenant", token=fan.watcher, after=head,
                                  concurrency=1)
        if "error" in opened or opened["opened"] != 1:
            raise RuntimeError(f"the baseline subscriber could not connect: {opened}")
        fan.log(f"baseline: {rate:g} cmd/s for {seconds:g} s to 1 subscriber")
        seg = await segment(fan, [client], rate, seconds, head)
        final = await client.ask("finish", timeout=120)
    finally:
        client.quit()
    dist = latencies([final], seg["low"], seg["high"])
    _, _, got, gaps, dups, *_ = final["subs"][0]
    shown = (f"{fmt_ms(dist.p50)} / {fmt_ms(dist.p99)} / {fmt_ms(dist.max)} ms ({got} of {seg['high'] - seg['low']} "
             f"events in {seg['send_s']:.1f} s" + (f", gaps {gaps} dups {dups}" if gaps or dups else "") + ")")
    report.info("1 fan-out", f"baseline: 1 subscriber, p50 / p99 / max @ {rate:g} cmd/s × {seconds:g} s", shown)
    report.info("1 fan-out", "  CPU cores @ baseline", cpu_text(seg["cpu"]))
    report.data["baseline"] = {**seg, "latency": dist}
    return seg["high"]


async def open_subscribers(fan: Fan, clients: list[Client], head: int, report) -> int:
    """Open --subscribers streams over the client processes; report connects, time, CPU, RSS; return how many."""
    n, procs = fan.args.subscribers, len(clients)
    shares = [n // procs + (1 if i < n % procs else 0) for i in range(procs)]
    rss_before = memory_mb(fan.servers.api.pid)
    fan.log(f"fan-out: opening {n:,} subscribers (Last-Event-ID {head}) from {procs} client process(es)")
    meter = fan.meter(clients)
    fan.servers.profile_window("connect")
    opened = await asyncio.gather(*(c.ask("open", count=k, path="/v1/streams/tenant", token=fan.watcher, after=head,
                                          concurrency=fan.args.connect_concurrency) for c, k in zip(clients, shares)))
    cpu = meter.stop()
    fan.servers.profile_window(None)
    if failed := [o["error"] for o in opened if "error" in o]:
        raise RuntimeError(f"a client process failed to open subscribers: {failed[0]}")
    connected, refused = sum(o["opened"] for o in opened), sum(o["failed"] for o in opened)
    seconds, errors = max(o["seconds"] for o in opened), [e for o in opened for e in o["errors"]]
    await asyncio.sleep(2)
    rss_idle = memory_mb(fan.servers.api.pid)
    attempted = n >= TARGETS["subscribers"]
    report.check("1 fan-out", "subscribers connected (one server process)",
                 f"{connected:,} of {n:,}" + (f" ({refused:,} failed)" if refused else "")
                 + ("" if attempted else f" (the target needs --subscribers {TARGETS['subscribers']:,})"),
                 f"≥ {TARGETS['subscribers']:,}", connected >= TARGETS["subscribers"] if attempted else None)
    report.info("1 fan-out", "time to open them", f"{seconds:.1f} s ({connected / max(1e-9, seconds):,.0f}/s, "
                f"concurrency {fan.args.connect_concurrency})")
    report.info("1 fan-out", "connect CPU (cores)", cpu_text(cpu))
    if rss_before and rss_idle:
        report.info("1 fan-out", "server RSS idle with subscribers",
                    f"{rss_idle:,.0f} MiB ({(rss_idle - rss_before) * 1024 / max(1, connected):.0f} KiB per "
                    f"subscriber; {rss_before:,.0f} MiB before)")
    if not connected:
        raise RuntimeError(f"no subscriber could connect: {errors}")
    return connected


def segment_rows(report, seg: dict, dist: Dist, connected: int, notes: list[str]) -> None:
    label = f"{seg['rate']:g} cmd/s × {seg['duration']:g} s"
    deliveries = Window(dist.n, seg["send_s"], "deliveries")
    report.check("1 fan-out", f"latency p50 / p99 / max @ {label}",
                 f"{fmt_ms(dist.p50)} / {fmt_ms(dist.p99)} / {fmt_ms(dist.max)} ms ({deliveries.text()})"
                 if dist.n else "no event received", f"p99 < {TARGETS['p99_ms']:.0f} ms",
                 dist.p99 < TARGETS["p99_ms"] if dist.n else False, deliveries if dist.n else None)
    events = seg["high"] - seg["low"]
    report.info("1 fan-out", f"  events @ {label}",
                f"{seg['commands']} commands → {events} events × {connected:,} subscribers = {events * connected:,} "
                f"deliveries: {events * connected / seg['duration']:,.0f}/s offered, "
                f"{events * connected / (seg['send_s'] + seg['drain_s']):,.0f}/s achieved (the last subscriber "
                f"had everything {seg['drain_s']:.1f} s after the last command was accepted)")
    report.info("1 fan-out", f"  POST /v1/commands @ {label}",
                f"until accepted: p50 {fmt_ms(seg['post'].p50)} ms, max {fmt_ms(seg['post'].max)} ms"
                + (f"; {seg['post_retries']} retries with the same Idempotency-Key after "
                   f"{', '.join(seg['post_retry_reasons'])}" if seg["post_retries"] else ""))
    report.info("1 fan-out", f"  CPU cores @ {label}", cpu_text(seg["cpu"]))
    if busy := [k for k, v in seg["cpu"].items() if k.startswith("client") and v >= 0.85]:
        notes.append(f"at {label} the client process(es) {', '.join(busy)} used ≥ 0.85 of a core: "
                     "the measured latency includes the client's own backlog")
    if seg["late_max_s"] > 0.05:
        notes.append(f"at {label} the command sender ran up to {seg['late_max_s'] * 1000:.0f} ms late")


def delivery_rows(fan: Fan, report, finals: list[dict], head: int, high: int, connected: int) -> None:
    subs = [s for f in finals for s in f["subs"]]
    expected = high - head
    delivered, gaps, dups = (sum(s[i] for s in subs) for i in (2, 3, 4))
    lost = sum(1 for s in subs if s[5])
    complete = sum(1 for s in subs if s[1] >= high and s[2] == expected and not s[3] and not s[4])
    report.check("1 fan-out", "events delivered / expected",
                 f"{delivered:,} / {expected * connected:,} ({complete:,} of {connected:,} subscribers complete; "
                 f"gaps {gaps}, duplicates/out-of-order {dups}, cut off {lost})",
                 "all, exactly once, in order", complete == connected and not gaps and not dups and not lost)
    if mismatch := sum(f["mismatch"] for f in finals):
        report.notes.append(f"{mismatch} events whose SSE id differed from their chain_seq")
    if notices := [n for s in subs for n in s[7]]:
        report.notes.append(f"stream notices seen: {notices[:3]}")
    if cut := [s[6] for s in subs if s[5] and s[6]][:3]:
        report.notes.append(f"connections cut off: {cut}")
    pid = fan.servers.api.pid
    report.info("1 fan-out", "server RSS now / peak", f"{memory_mb(pid) or 0:,.0f} / {memory_mb(pid, 'VmHWM') or 0:,.0f} MiB")
    report.data["fanout"] = {"segments": fan.segments, "delivered": delivered, "expected": expected * connected,
                             "complete": complete, "gaps": gaps, "duplicates": dups, "cut_off": lost}


async def fanout(fan: Fan, report) -> None:
    from bench.streams.api import wait_caught_up
    from infra.adapters.http.auth import mint

    tenant = f"fanout-{uuid.uuid4().hex[:8]}"
    fan.writer = mint(fan.servers.secret, tenant, "bench-agent", ["operator"], ttl_s=24 * 3600)
    fan.watcher = mint(fan.servers.secret, tenant, "bench-watcher", ["operator"], ttl_s=24 * 3600)
    head = (await fan.commands.first(fan.writer, fan.args.start_timeout))["events"][-1]["chain_seq"]
    await wait_caught_up(fan.servers, fan.commands.http, fan.watcher, head, 120, "fan-out warm-up", fan.log)
    if fan.args.baseline_duration > 0:
        head = await baseline(fan, head, report)
    clients = [Client(fan.mp, f"client{i}", "127.0.0.1", fan.servers.port) for i in range(max(1, fan.args.client_procs))]
    try:
        connected = await open_subscribers(fan, clients, head, report)
        low = head
        for rate in fan.args.rates:
            fan.log(f"fan-out: {max(1, int(round(rate * fan.args.duration)))} commands at {rate:g}/s to {connected:,}")
            fan.servers.profile_window(f"fan-out at {rate:g} cmd/s to {connected:,} subscribers")
            fan.segments.append(await segment(fan, clients, rate, fan.args.duration, low))
            fan.servers.profile_window(None)
            low = fan.segments[-1]["high"]
        finals = await asyncio.gather(*(c.ask("finish", timeout=300) for c in clients))
        for seg in fan.segments:
            segment_rows(report, seg, latencies(finals, seg["low"], seg["high"]), connected, report.notes)
        delivery_rows(fan, report, finals, head, low, connected)
    finally:
        for client in clients:
            client.quit()
