"""The streams benchmark's load, held while the console is measured: N subscribers of one tenant's
stream in client processes (bench/streams/worker.py) and RequestRun commands POSTed open-loop at a rate
(bench/streams/fanout.py `post_open_loop`, one chunk after another until stopped)."""
from __future__ import annotations

import asyncio
import multiprocessing as mp
import time
import uuid

from bench.lib.measure import Dist, Window, fmt_ms
from bench.lib.meters import cpu_text
from bench.streams.api import wait_caught_up
from bench.streams.fanout import Fan, latencies, post_open_loop
from bench.streams.worker import Client

CHUNK_S = 5.0  # commands are posted in chunks of this many seconds, each open-loop at the rate


class Load:
    def __init__(self, args, servers, commands, log):
        self.args, self.log = args, log
        self.fan = Fan(args, servers, mp.get_context("spawn"), commands, log)
        self.clients: list[Client] = []
        self.chunks: list[dict] = []
        self.stopping = asyncio.Event()
        self.task: asyncio.Task | None = None
        self.head = self.connected = 0
        self.started = 0.0
        self.meter = None

    async def start(self) -> None:
        """Open the subscribers (all resuming after the tenant's head), then keep commands flowing."""
        from infra.adapters.http.auth import mint
        fan, tenant = self.fan, f"load-{uuid.uuid4().hex[:8]}"
        fan.writer = mint(fan.servers.secret, tenant, "bench-agent", ["operator"], ttl_s=24 * 3600)
        fan.watcher = mint(fan.servers.secret, tenant, "bench-watcher", ["operator"], ttl_s=24 * 3600)
        self.head = (await fan.commands.send(fan.writer, {"type": "RequestRun", "agent_id": "load"}))["events"][-1]["chain_seq"]
        await wait_caught_up(fan.servers, fan.commands.http, fan.watcher, self.head, 120, "load warm-up", self.log)
        procs, n = max(1, self.args.client_procs), self.args.subscribers
        self.clients = [Client(fan.mp, f"client{i}", "127.0.0.1", fan.servers.port) for i in range(procs)]
        shares = [n // procs + (1 if i < n % procs else 0) for i in range(procs)]
        self.log(f"load: opening {n:,} subscribers, then {self.args.rate:g} RequestRun/s")
        opened = await asyncio.gather(*(c.ask("open", count=k, path="/v1/streams/tenant", token=fan.watcher,
                                              after=self.head, concurrency=self.args.connect_concurrency)
                                        for c, k in zip(self.clients, shares)))
        if failed := [o["error"] for o in opened if "error" in o]:
            raise RuntimeError(f"a client process failed to open subscribers: {failed[0]}")
        self.connected = sum(o["opened"] for o in opened)
        if not self.connected:
            raise RuntimeError(f"no subscriber could connect: {[e for o in opened for e in o['errors']][:3]}")
        self.meter, self.started = fan.meter(self.clients), time.perf_counter()
        self.task = asyncio.create_task(self.pump())

    async def pump(self) -> None:
        while not self.stopping.is_set():
            self.chunks.append(await post_open_loop(self.fan, self.args.rate, CHUNK_S))

    async def stop(self, report) -> None:
        """Stop the commands; report what the load was while the console was measured."""
        self.stopping.set()
        if self.task:
            await self.task
        seconds, cpu = time.perf_counter() - self.started, self.meter.stop() if self.meter else None
        progress = await asyncio.gather(*(c.ask("progress") for c in self.clients))
        finals = await asyncio.gather(*(c.ask("finish", timeout=300) for c in self.clients))
        self.rows(report, seconds, cpu, progress, finals)

    def rows(self, report, seconds: float, cpu, progress: list[dict], finals: list[dict]) -> None:
        high = max((c["high"] for c in self.chunks), default=self.head)
        commands = sum(c["commands"] for c in self.chunks)
        live, lost = sum(p["live"] for p in progress), sum(p["lost"] for p in progress)
        behind = high - min((p["min_last"] for p in progress if p["min_last"] is not None), default=high)
        report.info("load", "SSE subscribers of one tenant's stream",
                    f"{self.connected:,} of {self.args.subscribers:,} connected; at the end {live:,} still open, "
                    f"{lost:,} cut off; the slowest {behind:,} events behind")
        posts = [c["post"] for c in self.chunks if c["post"].n]
        report.info("load", f"RequestRun commands (target {self.args.rate:g}/s)",
                    f"{Window(commands, seconds, 'commands').rate_text()}; POST until accepted: median of the "
                    f"{CHUNK_S:g} s chunks' p50 {fmt_ms(Dist.of(p.p50 for p in posts).p50)} ms, "
                    f"worst {fmt_ms(max((p.max for p in posts), default=float('nan')))} ms")
        dist = latencies(finals, self.head, high)
        report.info("load", "its own fan-out latency p50 / p99 / max (receipt − recorded_at)",
                    f"{fmt_ms(dist.p50)} / {fmt_ms(dist.p99)} / {fmt_ms(dist.max)} ms "
                    f"({Window(dist.n, seconds, 'deliveries').text()})" if dist.n else "no event received")
        if cpu:
            report.info("load", "CPU cores while the console was measured", cpu_text(cpu))

    def quit(self) -> None:
        for client in self.clients:
            client.quit()
