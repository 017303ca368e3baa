#!/usr/bin/env python
"""runledger SSE streams benchmark: fan-out to many subscribers, and replay speed.

It starts `runledger serve` as a subprocess (its own topic prefix, JWT secret, port and chdb
directory; none of the caller's RUNLEDGER_* settings leak in) against an existing Kafka broker
and PostgreSQL, and prints one table: measured, target, met/MISSED/info.

  1. fan-out   N subscribers (default 10,000) hold /v1/streams/tenant of one tenant open. They
               live in --client-procs client processes (plain asyncio Protocols that decode
               HTTP/1.1 chunked bodies and parse SSE frames; no httpx), and all resume after
               the same Last-Event-ID H, so each must receive exactly the ids H+1..E, once and in
               order. Commands (RequestRun) are then POSTed open-loop at --rates commands/s for
               --duration s each (command i goes at t0 + i/rate). For every event every
               subscriber receives: delivery latency = receipt time (time.time() when the bytes
               reached the client's data_received) - the event's `recorded_at` (set by the
               command processor). So it includes processor -> Kafka -> channels projector ->
               PostgreSQL -> NOTIFY -> hub -> SSE write -> client read. After the last command,
               the bench waits until every subscriber has the last event (or --drain-timeout).
               Reported: p50/p99/max latency, events delivered vs expected, gaps, duplicates,
               server RSS and CPU, client CPU (a saturated client inflates the latencies).
  2. replay    --replay-events RequestRun command envelopes (commands.intake.command_envelope)
               are produced straight to <prefix>.commands for another tenant; once
               /v1/streams/tenant?min_seq=N&wait_ms=0 answers 200 (the channels projector has
               them), one subscriber connects with Last-Event-ID: 0 and the time from its
               connect() to the receipt of event N is measured (--replay-runs times).

--profile FILE runs the API server under cProfile, switched on only for the measured windows
(opening the subscribers, each fan-out rate, the first replay), writes FILE.1, FILE.2, ... and
prints the hot spots of each (the numbers of a profiled run are slower than real ones). The bench only reports: a missed
target never changes the exit status; errors (a server that dies, a command refused) exit 1.
"""
from __future__ import annotations

import argparse
import array
import asyncio
import io
import json
import multiprocessing as mp
import os
import platform
import pstats
import resource
import secrets
import shutil
import signal
import sys
import tempfile
import time
import traceback
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from common import (Child, ReportBase, Row, children_of, cpu_seconds,  # noqa: E402
                    machine_busy_seconds, proc_status_mb)

TARGETS = {"subscribers": 10_000, "p99_ms": 250.0, "replay_s": 2.0}
NOTICES = (b"overflow", b"replay_incomplete")


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def raise_nofile() -> int:
    """Raise the soft open-files limit to the hard one (each subscriber is one socket here and
    one in the server, which inherits the limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        return hard
    return soft if hard == resource.RLIM_INFINITY else hard


# ------------------------------------------------------------------------------ /proc helpers

def stack_pids(home: str | None) -> dict[str, list[int]]:
    """PostgreSQL (postmaster + backends) and Kafka of an infra/local/stack.sh home, if given."""
    groups: dict[str, list[int]] = {}
    if not home:
        return groups
    for name, pidfile, tree in (("postgres", "postgres.pid", True), ("kafka", "kafka.pid", False)):
        try:
            pid = int(Path(home, pidfile).read_text().split()[0])
        except (OSError, ValueError, IndexError):
            continue
        if cpu_seconds(pid) is not None:
            groups[name] = children_of(pid) if tree else [pid]
    return groups


class CpuMeter:
    """CPU seconds per wall second of named processes (or process groups) over a window, plus
    everything else on the machine ("others": other sessions' brokers, benchmarks, ...)."""

    home: str | None = None

    def __init__(self, pids: dict[str, int | None]):
        self.groups: dict[str, list[int]] = {k: [v] for k, v in pids.items() if v}
        self.groups.update(stack_pids(self.home))
        self.wall = time.perf_counter()
        self.start = {k: {p: cpu_seconds(p) for p in g} for k, g in self.groups.items()}
        self.machine = machine_busy_seconds()

    def stop(self) -> dict[str, float]:
        wall = time.perf_counter() - self.wall
        out: dict[str, float] = {}
        for name, begins in self.start.items():
            used = [(cpu_seconds(p), b) for p, b in begins.items()]
            used = [e - b for e, b in used if e is not None and b is not None]
            if used and wall > 0:
                out[name] = sum(used) / wall
        machine = machine_busy_seconds()
        if machine is not None and self.machine is not None and wall > 0:
            out["others"] = max(0.0, (machine - self.machine) / wall - sum(out.values()))
        return out


def cpu_text(cpu: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.2f}" for k, v in cpu.items())


# ------------------------------------------------------------------------------ SSE client

class Sub(asyncio.Protocol):
    """One SSE subscriber: HTTP/1.1 response head, chunked transfer decoding, SSE framing
    (CRLF, LF or CR line ends), and per-event bookkeeping against the expected id sequence."""

    def __init__(self, worker: "Worker", request: bytes, after: int):
        self.w = worker
        self.request = request
        self.transport: asyncio.Transport | None = None
        self.ready: asyncio.Future = asyncio.get_running_loop().create_future()
        self.head = b""
        self.headers_done = False
        self.status = 0
        self.chunked = True
        self.raw = b""          # undecoded chunked-encoding bytes
        self.chunk_left = 0     # payload bytes left in the current chunk
        self.crlf_left = 0      # bytes of the CRLF that ends a chunk still to skip
        self.text = b""         # SSE text not yet dispatched (line ends normalised to LF)
        self.after = after
        self.last = after
        self.count = 0
        self.gaps = 0           # ids skipped (missing events)
        self.dups = 0           # ids at or below the last one (duplicates / out of order)
        self.notices: list[str] = []
        self.error: str | None = None
        self.lost = False       # the connection closed before the bench closed it
        self.ended = False      # the server ended the chunked body
        self.first_at: float | None = None
        self.done_at: float | None = None
        self.closing = False

    # -- asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.write(self.request)  # type: ignore[attr-defined]

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closing:
            self.lost = True
            if exc is not None and self.error is None:
                self.error = repr(exc)
        if not self.ready.done():
            self.ready.set_result(False)

    def data_received(self, data: bytes) -> None:
        now = time.time()
        if not self.headers_done:
            self.head += data
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                return
            head, data = self.head[:end], self.head[end + 4:]
            self.head = b""
            self.headers_done = True
            lines = head.split(b"\r\n")
            try:
                self.status = int(lines[0].split()[1])
            except (IndexError, ValueError):
                self.status = -1
            headers = {}
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                headers[name.strip().lower()] = value.strip().lower()
            self.chunked = b"chunked" in headers.get(b"transfer-encoding", b"")
            if self.status != 200:
                self.error = f"HTTP {self.status}: {data[:300]!r}"
                self.ready.set_result(False)
                self.closing = True
                self.transport.close()
                return
            self.ready.set_result(True)
            if not data:
                return
        body = self.dechunk(data) if self.chunked else data
        if body:
            self.feed(body, now)

    # -- HTTP/1.1 chunked transfer coding
    def dechunk(self, data: bytes) -> bytes:
        buf = self.raw + data if self.raw else data
        out = []
        pos, n = 0, len(buf)
        while pos < n:
            if self.crlf_left:
                take = min(self.crlf_left, n - pos)
                pos += take
                self.crlf_left -= take
            elif self.chunk_left:
                take = min(self.chunk_left, n - pos)
                out.append(buf[pos:pos + take])
                pos += take
                self.chunk_left -= take
                if not self.chunk_left:
                    self.crlf_left = 2
            else:
                eol = buf.find(b"\r\n", pos)
                if eol < 0:
                    break
                size = int(buf[pos:eol].split(b";", 1)[0], 16)
                pos = eol + 2
                if size == 0:
                    self.ended = True
                    pos = n
                    break
                self.chunk_left = size
        self.raw = buf[pos:]
        return out[0] if len(out) == 1 else b"".join(out)

    # -- SSE framing (https://html.spec.whatwg.org/multipage/server-sent-events.html)
    def feed(self, body: bytes, now: float) -> None:
        text = self.text + body if self.text else body
        hold = b""
        if text.endswith(b"\r"):       # maybe the first half of a CRLF: decide with the next bytes
            text, hold = text[:-1], b"\r"
        if b"\r" in text:
            text = text.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        frames = text.split(b"\n\n")
        self.text = frames.pop() + hold
        for frame in frames:
            if frame:
                self.dispatch(frame, now)

    def dispatch(self, frame: bytes, now: float) -> None:
        ident = data = None
        event = b"message"
        for line in frame.split(b"\n"):
            if line.startswith(b"id:"):
                ident = line[4:] if line[3:4] == b" " else line[3:]
            elif line.startswith(b"data:"):
                value = line[6:] if line[5:6] == b" " else line[5:]
                data = value if data is None else data + b"\n" + value
            elif line.startswith(b"event:"):
                event = line[7:] if line[6:7] == b" " else line[6:]
        if ident is None:
            if event in NOTICES:
                self.notices.append(f"{event.decode()} {(data or b'').decode(errors='replace')}")
            return
        seq = int(ident)
        if seq <= self.last:
            self.dups += 1
            return
        if seq != self.last + 1:
            self.gaps += seq - self.last - 1
        self.last = seq
        self.count += 1
        w = self.w
        recorded = w.recorded.get(seq)
        if recorded is None:
            recorded = w.learn(seq, data)
        w.ids.append(seq)
        w.lat.append(now - recorded)
        if self.first_at is None:
            self.first_at = now
        if seq >= w.target and self.done_at is None:
            self.done_at = now

    def close(self) -> None:
        self.closing = True
        if self.transport is not None:
            self.transport.close()


class Worker:
    """A client process: opens subscribers on request, reports progress and results through a
    multiprocessing pipe (request -> reply)."""

    def __init__(self, conn, host: str, port: int):
        self.conn = conn
        self.host, self.port = host, port
        self.subs: list[Sub] = []
        self.recorded: dict[int, float] = {}
        self.mismatch = 0
        self.reset(0)
        self.stop = asyncio.Event()
        self.opening: asyncio.Task | None = None

    def reset(self, target: int) -> None:
        self.ids = array.array("I")
        self.lat = array.array("d")
        self.target = target if target else 1 << 62

    def learn(self, seq: int, data: bytes | None) -> float:
        """recorded_at of an event (same for every subscriber: parsed once per id), and a check
        that the SSE id is the event's chain_seq (the tenant channel holds every event)."""
        body = json.loads(data) if data else {}
        recorded = datetime.fromisoformat(body["recorded_at"]).timestamp() if "recorded_at" in body else float("nan")
        if body.get("chain_seq") != seq:
            self.mismatch += 1
        self.recorded[seq] = recorded
        return recorded

    async def open(self, count: int, path: str, token: str, after: int | None, concurrency: int) -> dict:
        loop = asyncio.get_running_loop()
        request = (f"GET {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
                   f"Authorization: Bearer {token}\r\nAccept: text/event-stream\r\n"
                   + (f"Last-Event-ID: {after}\r\n" if after is not None else "") + "\r\n").encode()
        gate = asyncio.Semaphore(concurrency)
        failures: list[str] = []
        started = time.time()

        async def one() -> None:
            async with gate:
                sub = Sub(self, request, after or 0)
                try:
                    await loop.create_connection(lambda: sub, self.host, self.port)
                    ok = await asyncio.wait_for(sub.ready, 120)
                except (OSError, asyncio.TimeoutError) as error:
                    sub.error, ok = repr(error), False
                if ok:
                    self.subs.append(sub)
                else:
                    failures.append(sub.error or "closed before the response")
                    sub.close()
        await asyncio.gather(*(one() for _ in range(count)))
        return {"opened": len(self.subs), "failed": len(failures), "errors": failures[:5],
                "started": started, "seconds": time.time() - started}

    def progress(self) -> dict:
        live = [s for s in self.subs if not s.lost]
        return {"min_last": min((s.last for s in live), default=None), "live": len(live),
                "lost": len(self.subs) - len(live), "done": sum(1 for s in self.subs if s.done_at),
                "received": sum(s.count for s in self.subs)}

    def finish(self) -> dict:
        for sub in self.subs:
            sub.close()
        result = {
            "subs": [(s.after, s.last, s.count, s.gaps, s.dups, s.lost, s.error, s.notices[:3],
                      s.first_at, s.done_at) for s in self.subs],
            "ids": self.ids.tobytes(), "lat": self.lat.tobytes(), "mismatch": self.mismatch,
        }
        self.subs = []
        self.recorded.clear()
        self.mismatch = 0
        self.reset(0)
        return result

    def on_request(self) -> None:
        try:
            op, kw = self.conn.recv()
        except EOFError:
            self.stop.set()
            return
        if op == "open":
            self.reset(kw.pop("target", 0))
            task = asyncio.ensure_future(self.open(**kw))
            task.add_done_callback(lambda t: self.conn.send(t.result() if not t.exception()
                                                            else {"error": repr(t.exception())}))
            self.opening = task
        elif op == "target":
            self.target = kw["target"]
            self.conn.send(True)
        elif op == "progress":
            self.conn.send(self.progress())
        elif op == "finish":
            self.conn.send(self.finish())
        elif op == "quit":
            self.stop.set()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        loop.add_reader(self.conn.fileno(), self.on_request)
        await self.stop.wait()
        loop.remove_reader(self.conn.fileno())


def worker_main(conn, host: str, port: int) -> None:
    raise_nofile()
    signal.signal(signal.SIGINT, signal.SIG_IGN)   # the parent decides when to stop
    asyncio.run(Worker(conn, host, port).run())


class Client:
    """The parent's handle on one client process."""

    def __init__(self, ctx, name: str, host: str, port: int):
        self.name = name
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=worker_main, args=(child, host, port), name=name, daemon=True)
        self.proc.start()
        child.close()

    @property
    def pid(self) -> int | None:
        return self.proc.pid

    async def ask(self, op: str, timeout: float = 600, **kw: Any) -> Any:
        self.conn.send((op, kw))
        ready = await asyncio.to_thread(self.conn.poll, timeout)
        if not ready:
            raise RuntimeError(f"{self.name} did not answer {op!r} within {timeout}s")
        return self.conn.recv()

    def quit(self) -> None:
        try:
            if self.proc.is_alive():
                self.conn.send(("quit", {}))
                self.proc.join(10)
        except (OSError, EOFError, BrokenPipeError):
            pass
        if self.proc.is_alive():
            self.proc.terminate()
            self.proc.join(5)


# ------------------------------------------------------------------------------ report

class Report(ReportBase):
    def add(self, phase: str, metric: str, measured: str, target: str = "—",
            ok: bool | None = None) -> None:
        self.rows.append(Row(phase, metric, measured, target,
                             "info" if ok is None else ("met" if ok else "MISSED")))


def ms(value: float) -> str:
    return "n/a" if value != value else (f"{value:,.0f} ms" if value >= 100 else f"{value:.1f} ms")


# ------------------------------------------------------------------------------ servers




class Stack:
    """The server side: `serve` with every role (layout one), or an API-only `serve` plus a
    `serve --no-api` for the processor and projectors (layout split)."""

    def __init__(self, args, workdir: Path):
        self.args = args
        self.workdir = workdir
        self.prefix = f"bench{uuid.uuid4().hex[:8]}"
        self.secret = secrets.token_urlsafe(36)[:48]
        self.port = free_port()
        self.children: list[Child] = []
        self.api: Child | None = None
        self.profile = Path(args.profile).resolve() if args.profile else None
        self.windows: list[str] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self, name: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("RUNLEDGER_")}
        env.update({
            "RUNLEDGER_KAFKA_BOOTSTRAP": self.args.bootstrap,
            "RUNLEDGER_DATABASE_URL": self.args.database_url,
            "RUNLEDGER_JWT_SECRET": self.secret,
            "RUNLEDGER_TOPIC_PREFIX": self.prefix,
            "RUNLEDGER_API_PORT": str(self.port),
            "RUNLEDGER_CHDB_PATH": str(self.workdir / f"chdb-{name}"),
            "RUNLEDGER_PARTITIONS": str(self.args.partitions),
            "RUNLEDGER_SSE_RETAIN": str(max(100_000, 2 * self.args.replay_events)),
            # an overloaded server answers late rather than 504: the bench waits for every outcome
            "RUNLEDGER_COMMAND_TIMEOUT_S": "120",
            "PYTHONUNBUFFERED": "1",
        })
        return env

    def argv(self, *options: str, profile: bool = False) -> list[str]:
        entry = self.args.serve_entry
        if profile and self.profile:   # this file as a wrapper: cProfile on SIGUSR1, dump on SIGUSR2
            target = [str(Path(__file__).resolve()), PROFILED_SERVE, str(self.profile), entry]
        else:
            target = [entry] if entry.endswith(".py") else ["-m", entry]
        return [sys.executable, *target, "serve", "--port", str(self.port), *options]

    def profile_window(self, name: str | None) -> None:
        """Start (name) or end (None) a profiled window of the API server."""
        if not self.profile or not self.api or not self.api.alive():
            return
        if name:
            self.windows.append(name)
            self.api.proc.send_signal(signal.SIGUSR1)
        else:
            self.api.proc.send_signal(signal.SIGUSR2)

    def profiles(self) -> list[tuple[str, Path]]:
        return [(name, Path(f"{self.profile}.{i + 1}")) for i, name in enumerate(self.windows)]

    def start(self) -> None:
        if self.args.layout == "one":
            self.api = Child("serve", self.argv(profile=True), self.env("serve"), self.workdir, stop_timeout=90)
            self.children = [self.api]
        else:
            self.api = Child("serve-api", self.argv("--no-processor", "--no-projectors", profile=True),
                             self.env("api"), self.workdir, stop_timeout=90)
            worker = Child("serve-worker", self.argv("--no-api"), self.env("worker"), self.workdir, stop_timeout=90)
            self.children = [self.api, worker]

    def pids(self) -> dict[str, int]:
        return {c.name: c.pid for c in self.children}

    def check(self) -> None:
        for child in self.children:
            if not child.alive():
                raise RuntimeError(f"{child.name} exited with {child.proc.returncode}:\n{child.tail()}")

    def stop(self) -> None:
        for child in reversed(self.children):
            child.stop()


def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------------------ helpers

async def send_command(http, token: str, body: dict, deadline_s: float = 900.0) -> dict:
    """POST a command with an Idempotency-Key and return its accepted outcome. An overloaded
    server may answer 504 outcome_pending or not answer in time: the same key is then sent
    again (the API's documented way to get the outcome), until deadline_s has passed."""
    import httpx
    key = f"bench-{uuid.uuid4()}"
    headers = {"Authorization": f"Bearer {token}", "Idempotency-Key": key}
    give_up = time.monotonic() + deadline_s
    while True:
        try:
            response = await http.post("/v1/commands", json=body, headers=headers)
            payload = response.json()
            if response.status_code == 200 and payload.get("status") == "accepted":
                return payload
            if response.status_code not in (503, 504):
                raise RuntimeError(f"command refused: {response.status_code} {payload}")
            problem = f"{response.status_code} {payload.get('code')}"
        except httpx.TimeoutException as error:
            problem = repr(error)
        if time.monotonic() > give_up:
            raise RuntimeError(f"no outcome for command {key} within {deadline_s:.0f}s (last: {problem})")
        RETRIES.append(problem)
        await asyncio.sleep(1.0)


RETRIES: list[str] = []


async def first_command(stack: Stack, http, token: str, timeout: float) -> dict:
    """Send a RequestRun until it is accepted (the processor owns its partitions by then)."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        stack.check()
        try:
            response = await http.post("/v1/commands", json={"type": "RequestRun", "agent_id": "bench"},
                                       headers={"Authorization": f"Bearer {token}"})
            if response.status_code == 200 and response.json().get("status") == "accepted":
                return response.json()
            last = (response.status_code, response.text[:300])
        except Exception as error:  # noqa: BLE001  (not listening yet)
            last = repr(error)
        await asyncio.sleep(0.5)
    raise RuntimeError(f"no command accepted within {timeout}s (last answer: {last})")


async def caught_up(http, token: str, min_seq: int) -> tuple[bool, int | None]:
    """Has the channels read model applied the tenant's chain up to min_seq?
    (GET /v1/streams/tenant?min_seq=..&wait_ms=0: 200 and a stream once it has, 503 before)."""
    async with http.stream("GET", "/v1/streams/tenant", params={"min_seq": min_seq, "wait_ms": 0},
                           headers={"Authorization": f"Bearer {token}"}) as response:
        if response.status_code == 200:
            return True, min_seq
        body = json.loads(await response.aread() or b"{}")
        if response.status_code != 503:
            raise RuntimeError(f"unexpected answer {response.status_code}: {body}")
        return False, (body.get("details") or {}).get("applied_seq", body.get("applied_seq"))


async def wait_caught_up(stack: Stack, http, token: str, min_seq: int, timeout: float, what: str) -> float:
    started = time.monotonic()
    last_log = started
    while True:
        stack.check()
        ok, applied = await caught_up(http, token, min_seq)
        if ok:
            return time.monotonic() - started
        now = time.monotonic()
        if now - started > timeout:
            raise RuntimeError(f"{what}: channels read model at {applied}, not {min_seq}, after {timeout}s")
        if now - last_log > 10:
            log(f"{what}: channels read model at chain_seq {applied} of {min_seq}")
            last_log = now
        await asyncio.sleep(0.2)


def latency_stats(ids, lat, low: int, high: int):
    """Latencies (ms) of events low < id <= high."""
    import numpy as np
    mask = (ids > low) & (ids <= high)
    values = lat[mask] * 1000.0
    if not len(values):
        return None
    return {"n": int(len(values)), "p50": float(np.percentile(values, 50)),
            "p99": float(np.percentile(values, 99)), "max": float(values.max()),
            "min": float(values.min()), "mean": float(values.mean())}


# ------------------------------------------------------------------------------ phase 1

async def run_segment(args, stack: Stack, http, token: str, clients: list[Client], rate: float,
                      duration: float, low: int) -> dict:
    """POST RequestRun commands open-loop at `rate` for `duration` s, then wait until every live
    subscriber has the last event (or --drain-timeout)."""
    total = max(1, int(round(rate * duration)))
    meter = CpuMeter({"server": stack.api.pid, **({c.name: c.pid for c in stack.children[1:]}),
                      "bench": os.getpid(), **{c.name: c.pid for c in clients}})
    results: list[dict] = []
    late: list[float] = []
    t0 = time.perf_counter() + 0.2

    async def one(i: int) -> None:
        due = t0 + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        else:
            late.append(-delay)
        sent = time.perf_counter()
        results.append(await send_command(http, token, {"type": "RequestRun", "agent_id": f"a{i % 50}"}))
        took.append(time.perf_counter() - sent)
    took: list[float] = []
    retries_before = len(RETRIES)
    await asyncio.gather(*(one(i) for i in range(total)))
    retries = RETRIES[retries_before:]
    sent_s = time.perf_counter() - t0
    high = max(r["events"][-1]["chain_seq"] for r in results if r.get("events"))
    events = sum(len(r.get("events") or ()) for r in results)
    await asyncio.gather(*(c.ask("target", target=high) for c in clients))
    drain_start = time.perf_counter()
    last_log = drain_start
    while True:
        stack.check()
        progress = await asyncio.gather(*(c.ask("progress") for c in clients))
        lows = [p["min_last"] for p in progress if p["min_last"] is not None]
        live = sum(p["live"] for p in progress)
        if not live or min(lows) >= high:
            break
        if time.perf_counter() - drain_start > args.drain_timeout:
            log(f"fan-out: drain timeout: slowest subscriber at {min(lows)} of {high}")
            break
        if time.perf_counter() - last_log > 5:
            log(f"fan-out: draining, slowest subscriber at id {min(lows)} of {high}, "
                f"{sum(p['done'] for p in progress):,} of {live:,} complete")
            last_log = time.perf_counter()
        await asyncio.sleep(0.1)
    drain_s = time.perf_counter() - drain_start
    return {"rate": rate, "duration": duration, "commands": total, "events": events, "low": low, "high": high,
            "send_s": sent_s, "drain_s": drain_s, "cpu": meter.stop(), "late_max_s": max(late, default=0.0),
            "post_p50_ms": sorted(took)[len(took) // 2] * 1000, "post_max_ms": max(took) * 1000,
            "post_retries": len(retries), "post_retry_reasons": sorted(set(retries))[:3],
            "live": live, "rss_mb": proc_status_mb(stack.api.pid, "VmRSS")}


async def baseline(args, stack: Stack, ctx, http, writer: str, watcher: str, head: int, report: Report) -> int:
    """The same load with one subscriber: the latency of the pipeline itself (processor, Kafka,
    channels projector, NOTIFY, one SSE write), so the fan-out rows can be read against it."""
    import numpy as np
    rate = max(args.rates)
    client = Client(ctx, "baseline-client", "127.0.0.1", stack.port)
    try:
        opened = await client.ask("open", count=1, path="/v1/streams/tenant", token=watcher, after=head,
                                  concurrency=1)
        if "error" in opened or opened["opened"] != 1:
            raise RuntimeError(f"the baseline subscriber could not connect: {opened}")
        log(f"baseline: {rate:g} cmd/s for {args.baseline_duration:g} s to 1 subscriber")
        seg = await run_segment(args, stack, http, writer, [client], rate, args.baseline_duration, head)
        final = await client.ask("finish", timeout=120)
    finally:
        client.quit()
    ids = np.frombuffer(final["ids"], dtype=np.uint32).astype(np.int64)
    lat = np.frombuffer(final["lat"], dtype=np.float64)
    stats = latency_stats(ids, lat, seg["low"], seg["high"])
    after, last, got, gaps, dups, lost, error, notices, first_at, done_at = final["subs"][0]
    label = f"{rate:g} cmd/s × {args.baseline_duration:g} s"
    report.add("1 fan-out", f"baseline: 1 subscriber, p50 / p99 / max @ {label}",
               f"{ms(stats['p50'])} / {ms(stats['p99'])} / {ms(stats['max'])} ({got} of "
               f"{seg['high'] - seg['low']} events{', gaps %d dups %d' % (gaps, dups) if gaps or dups else ''})"
               if stats else "no event received")
    report.add("1 fan-out", f"  CPU cores @ baseline", cpu_text(seg["cpu"]))
    report.data["baseline"] = {**seg, "latency": stats}
    return seg["high"]


async def fanout(args, stack: Stack, ctx, http, report: Report) -> None:
    import httpx  # noqa: F401
    import numpy as np
    from commands.auth import mint

    tenant = f"fanout-{uuid.uuid4().hex[:8]}"
    writer = mint(stack.secret, tenant, "bench-agent", ["operator"], ttl_s=24 * 3600)
    watcher = mint(stack.secret, tenant, "bench-watcher", ["operator"], ttl_s=24 * 3600)
    first = await first_command(stack, http, writer, args.start_timeout)
    head = first["events"][-1]["chain_seq"]
    await wait_caught_up(stack, http, watcher, head, 120, "fan-out warm-up")
    host, port = "127.0.0.1", stack.port
    if args.baseline_duration > 0:
        head = await baseline(args, stack, ctx, http, writer, watcher, head, report)
    n = args.subscribers
    procs = max(1, args.client_procs)
    clients = [Client(ctx, f"client{i}", host, port) for i in range(procs)]
    try:
        rss_before = proc_status_mb(stack.api.pid, "VmRSS")
        shares = [n // procs + (1 if i < n % procs else 0) for i in range(procs)]
        log(f"fan-out: opening {n:,} subscribers to /v1/streams/tenant (Last-Event-ID {head}) "
            f"from {procs} client process(es)")
        meter = CpuMeter({"server": stack.api.pid, **{c.name: c.pid for c in clients}})
        stack.profile_window("connect")
        opened = await asyncio.gather(*(c.ask("open", count=k, path="/v1/streams/tenant", token=watcher,
                                              after=head, concurrency=args.connect_concurrency)
                                        for c, k in zip(clients, shares)))
        connect_cpu = meter.stop()
        stack.profile_window(None)
        for o in opened:
            if "error" in o:
                raise RuntimeError(f"a client process failed to open subscribers: {o['error']}")
        connected = sum(o["opened"] for o in opened)
        failed = sum(o["failed"] for o in opened)
        connect_s = max(o["seconds"] for o in opened)
        errors = [e for o in opened for e in o["errors"]]
        log(f"fan-out: {connected:,} open, {failed:,} failed in {connect_s:.1f}s {errors[:2]}")
        await asyncio.sleep(2)
        rss_idle = proc_status_mb(stack.api.pid, "VmRSS")
        attempted = n >= TARGETS["subscribers"]
        report.add("1 fan-out", "subscribers connected (one server process)",
                   f"{connected:,} of {n:,}" + (f" ({failed:,} failed)" if failed else "")
                   + ("" if attempted else f" (the target needs --subscribers {TARGETS['subscribers']})"),
                   f"≥ {TARGETS['subscribers']:,}", connected >= TARGETS["subscribers"] if attempted else None)
        report.add("1 fan-out", "time to open them", f"{connect_s:.1f} s ({connected / connect_s:,.0f}/s, "
                   f"concurrency {args.connect_concurrency})")
        report.add("1 fan-out", "connect CPU (cores)", cpu_text(connect_cpu))
        if rss_before and rss_idle:
            report.add("1 fan-out", "server RSS idle with subscribers",
                       f"{rss_idle:,.0f} MiB ({(rss_idle - rss_before) * 1024 / max(1, connected):.0f} KiB "
                       f"per subscriber; {rss_before:,.0f} MiB before)")
        report.data["fanout"] = {"subscribers": n, "connected": connected, "failed": failed,
                                 "connect_s": connect_s, "rss_before_mb": rss_before,
                                 "rss_idle_mb": rss_idle, "segments": []}
        if not connected:
            raise RuntimeError(f"no subscriber could connect: {errors}")

        segments = []
        low = head
        for rate in args.rates:
            log(f"fan-out: {max(1, int(round(rate * args.duration)))} commands at {rate:g}/s to {connected:,} subscribers")
            stack.profile_window(f"fan-out at {rate:g} cmd/s to {connected:,} subscribers")
            seg = await run_segment(args, stack, http, writer, clients, rate, args.duration, low)
            stack.profile_window(None)
            segments.append(seg)
            log(f"fan-out: {rate:g}/s done; drained {seg['drain_s']:.1f}s after the last command; "
                f"CPU {cpu_text(seg['cpu'])}")
            low = seg["high"]

        finals = await asyncio.gather(*(c.ask("finish", timeout=300) for c in clients))
        ids = np.concatenate([np.frombuffer(f["ids"], dtype=np.uint32) for f in finals]).astype(np.int64)
        lat = np.concatenate([np.frombuffer(f["lat"], dtype=np.float64) for f in finals])
        subs = [s for f in finals for s in f["subs"]]
        mismatch = sum(f["mismatch"] for f in finals)
        high = segments[-1]["high"] if segments else head
        expected_each = high - head
        delivered = sum(s[2] for s in subs)
        gaps = sum(s[3] for s in subs)
        dups = sum(s[4] for s in subs)
        lost = sum(1 for s in subs if s[5])
        complete = sum(1 for s in subs if s[1] >= high and s[2] == expected_each and not s[3] and not s[4])
        notices = [n for s in subs for n in s[7]]
        lost_errors = [s[6] for s in subs if s[5] and s[6]][:3]
        hwm = proc_status_mb(stack.api.pid, "VmHWM")
        for seg in segments:
            stats = latency_stats(ids, lat, seg["low"], seg["high"])
            label = f"{seg['rate']:g} cmd/s × {args.duration:g} s"
            seg["latency"] = stats
            if stats:
                report.add("1 fan-out", f"latency p50 / p99 / max @ {label}",
                           f"{ms(stats['p50'])} / {ms(stats['p99'])} / {ms(stats['max'])}",
                           f"p99 < {TARGETS['p99_ms']:.0f} ms", stats["p99"] < TARGETS["p99_ms"])
            else:
                report.add("1 fan-out", f"latency @ {label}", "no event received", f"p99 < {TARGETS['p99_ms']:.0f} ms", False)
            seg_events = seg["high"] - seg["low"]
            report.add("1 fan-out", f"  events @ {label}",
                       f"{seg['commands']} commands → {seg_events} events × {connected:,} subscribers = "
                       f"{seg_events * connected:,} deliveries: {seg_events * connected / seg['duration']:,.0f}/s offered, "
                       f"{seg_events * connected / (seg['send_s'] + seg['drain_s']):,.0f}/s achieved "
                       f"(the last subscriber had everything {seg['drain_s']:.1f} s after the last command was accepted)")
            report.add("1 fan-out", f"  POST /v1/commands @ {label}",
                       f"until accepted: p50 {ms(seg['post_p50_ms'])}, max {ms(seg['post_max_ms'])}"
                       + (f"; {seg['post_retries']} retries with the same Idempotency-Key after "
                          f"{', '.join(seg['post_retry_reasons'])}" if seg["post_retries"] else ""))
            report.add("1 fan-out", f"  CPU cores @ {label}", cpu_text(seg["cpu"]))
            busy = [k for k, v in seg["cpu"].items() if k.startswith("client") and v >= 0.85]
            if busy:
                report.notes.append(f"at {label} the client process(es) {', '.join(busy)} used ≥ 0.85 of a core: "
                                    "the measured latency includes the client's own backlog")
            if seg["late_max_s"] > 0.05:
                report.notes.append(f"at {label} the command sender ran up to {seg['late_max_s'] * 1000:.0f} ms late")
        report.add("1 fan-out", "events delivered / expected",
                   f"{delivered:,} / {expected_each * connected:,} ({complete:,} of {connected:,} subscribers "
                   f"complete; gaps {gaps}, duplicates/out-of-order {dups}, cut off {lost})",
                   "all, exactly once, in order", complete == connected and not gaps and not dups and not lost)
        if mismatch:
            report.notes.append(f"{mismatch} events whose SSE id differed from their chain_seq")
        if notices:
            report.notes.append(f"stream notices seen: {notices[:3]}")
        if lost_errors:
            report.notes.append(f"connections cut off: {lost_errors}")
        report.add("1 fan-out", "server RSS now / peak", f"{proc_status_mb(stack.api.pid, 'VmRSS') or 0:,.0f} / "
                   f"{hwm or 0:,.0f} MiB")
        report.data["fanout"].update({"segments": segments, "delivered": delivered,
                                      "expected": expected_each * connected, "complete": complete,
                                      "gaps": gaps, "duplicates": dups, "cut_off": lost, "peak_rss_mb": hwm,
                                      "id_mismatch": mismatch, "notices": notices[:10]})
    finally:
        for c in clients:
            c.quit()


# ------------------------------------------------------------------------------ phase 2

async def produce_requests(args, stack: Stack, tenant: str, count: int) -> float:
    from commands.auth import Principal
    from commands.intake import command_envelope
    from infra import kafka
    from infra.settings import Settings

    settings = Settings(RUNLEDGER_KAFKA_BOOTSTRAP=args.bootstrap, RUNLEDGER_DATABASE_URL=args.database_url,
                        jwt_secret=stack.secret, topic_prefix=stack.prefix, partitions=args.partitions)
    if (settings.kafka_bootstrap, settings.topic_prefix) != (args.bootstrap, stack.prefix):
        raise RuntimeError(f"settings did not take the bench broker/prefix: {settings!r}")
    principal = Principal(tenant, "bench-agent", ("operator",))
    started = time.perf_counter()
    producer = kafka.command_producer(settings)
    await producer.start()
    try:
        key = tenant.encode()
        for i in range(count):
            body = json.dumps({"type": "RequestRun", "agent_id": f"agent-{i % 40:02d}"}).encode()
            envelope = command_envelope(principal, body, None, None, None)
            await producer.send(settings.commands_topic, kafka.dumps(envelope), key=key)
            if i % 20_000 == 19_999:
                log(f"replay: produced {i + 1:,} commands")
        await producer.flush()
    finally:
        await producer.stop()
    return time.perf_counter() - started


async def replay(args, stack: Stack, ctx, http, report: Report) -> None:
    from commands.auth import mint

    tenant = f"replay-{uuid.uuid4().hex[:8]}"
    writer = mint(stack.secret, tenant, "bench-agent", ["operator"], ttl_s=24 * 3600)
    watcher = mint(stack.secret, tenant, "bench-watcher", ["operator"], ttl_s=24 * 3600)
    await first_command(stack, http, writer, args.start_timeout)   # processor is up
    n = args.replay_events
    count = n - 1   # the first command appended one event already (RequestRun → run.requested)
    log(f"replay: producing {count:,} RequestRun commands for tenant {tenant}")
    produce_s = await produce_requests(args, stack, tenant, count)
    log(f"replay: produced in {produce_s:.1f}s; waiting for the channels projector to apply chain_seq {n:,}")
    t0 = time.perf_counter()
    await wait_caught_up(stack, http, watcher, n, args.prefill_timeout, "replay prefill")
    fill_s = time.perf_counter() - t0 + produce_s
    report.add("2 replay", "prefill (produce → processor → channels projector)",
               f"{n:,} events in {fill_s:.1f} s ({n / fill_s:,.0f} events/s end to end)")
    client = Client(ctx, "replay-client", "127.0.0.1", stack.port)
    runs = []
    try:
        for run in range(args.replay_runs):
            meter = CpuMeter({"server": stack.api.pid, "client": client.pid})
            if run == 0:
                stack.profile_window(f"replay of {n:,} events")
            opened = await client.ask("open", count=1, path="/v1/streams/tenant", token=watcher, after=0,
                                      concurrency=1, target=n)
            if "error" in opened or opened["opened"] != 1:
                raise RuntimeError(f"the replay subscriber could not connect: {opened}")
            deadline = time.monotonic() + args.replay_timeout
            while True:
                progress = await client.ask("progress")
                if progress["done"] or not progress["live"] or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.02)
            cpu = meter.stop()
            if run == 0:
                stack.profile_window(None)
            final = await client.ask("finish", timeout=300)
            after, last, got, gaps, dups, lost, error, notices, first_at, done_at = final["subs"][0]
            started = opened["started"]
            ok = done_at is not None and got >= n and not gaps and not dups
            seconds = (done_at - started) if done_at else float("nan")
            runs.append({"seconds": seconds, "first_s": (first_at - started) if first_at else None,
                         "received": got, "gaps": gaps, "dups": dups, "lost": lost, "error": error,
                         "notices": notices, "cpu": cpu, "ok": ok})
            log(f"replay run {run + 1}: {got:,} events in {seconds:.2f}s "
                f"({got / seconds if seconds == seconds else 0:,.0f}/s), gaps {gaps}, dups {dups}; CPU {cpu_text(cpu)}")
            await asyncio.sleep(1)
    finally:
        client.quit()
    good = sorted(r["seconds"] for r in runs if r["ok"])
    median = good[len(good) // 2] if good else float("nan")
    shown = ", ".join(f"{r['seconds']:.2f}" for r in runs)
    report.add("2 replay", f"Last-Event-ID: 0 → all {n:,} events (median of {len(runs)})",
               f"{median:.2f} s ({n / median if median == median else 0:,.0f} events/s; runs: {shown} s)",
               f"< {TARGETS['replay_s']:g} s", bool(good) and median < TARGETS["replay_s"])
    firsts = [r["first_s"] for r in runs if r["first_s"] is not None]
    if firsts:
        report.add("2 replay", "  time to first event", f"{min(firsts) * 1000:.0f}–{max(firsts) * 1000:.0f} ms")
    report.add("2 replay", "  exactly once, in order", "yes" if all(r["ok"] for r in runs) else
               "NO: " + "; ".join(f"got {r['received']}, gaps {r['gaps']}, dups {r['dups']}, {r['error']} "
                                  f"{r['notices']}" for r in runs if not r["ok"]),
               "ids 1..N", all(r["ok"] for r in runs))
    report.add("2 replay", "  CPU cores (last run)", cpu_text(runs[-1]["cpu"]))
    report.data["replay"] = {"events": n, "prefill_s": fill_s, "runs": runs, "median_s": median}


# ------------------------------------------------------------------------------ profile

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


def profile_summary(path: Path, top: int) -> str:
    """Top functions by own time, as a share of the busy (non-epoll) time, and by cumulative."""
    stats = pstats.Stats(str(path))
    entries = stats.stats  # type: ignore[attr-defined]
    total = sum(v[2] for v in entries.values())
    idle = sum(v[2] for k, v in entries.items() if k[2] in ("<method 'poll' of 'select.epoll' objects>",
                                                           "<method 'select' of 'select.epoll' objects>"))
    busy = max(1e-9, total - idle)

    def name(key) -> str:
        filename, line, func = key
        short = filename.replace(str(ROOT) + "/", "")
        if "site-packages/" in short:
            short = short.split("site-packages/", 1)[1]
        elif "/lib/python3" in short:
            short = "stdlib/" + short.split("/lib/python3", 1)[1].split("/", 1)[-1]
        return f"{short}:{line}({func})" if line else func

    out = io.StringIO()
    out.write(f"cProfile of the API server: {total:.1f} s profiled, {idle:.1f} s idle in epoll, "
              f"{busy:.1f} s busy\n\nown time by component (% of busy):\n")
    parts: dict[str, float] = {}
    for key, v in entries.items():
        if key[2] in ("<method 'poll' of 'select.epoll' objects>",):
            continue
        parts[component(key)] = parts.get(component(key), 0.0) + v[2]
    for part, seconds in sorted(parts.items(), key=lambda kv: kv[1], reverse=True):
        if seconds / busy >= 0.005:
            out.write(f"  {seconds / busy * 100:5.1f}%  {seconds:7.2f}s  {part}\n")
    out.write("\nby own time (% of busy):\n")
    for key, v in sorted(entries.items(), key=lambda kv: kv[1][2], reverse=True)[:top]:
        if v[2] and key[2] not in ("<method 'poll' of 'select.epoll' objects>",):
            out.write(f"  {v[2] / busy * 100:5.1f}%  {v[2]:7.2f}s  {v[1]:>9,} calls  {name(key)}\n")
    out.write("\nby cumulative time, project and SSE/HTTP-stack frames (% of busy; nested, so they overlap):\n")
    shown = 0
    wanted = ("streams/", "projectors/", "queries/", "commands/", "infra/", "sse_starlette/", "h11",
              "uvicorn/", "anyio/", "psycopg", "json/", "starlette/", "fastapi/", "aiokafka/")
    for key, v in sorted(entries.items(), key=lambda kv: kv[1][3], reverse=True):
        where = name(key)
        if v[3] > 0.9 * total or not where.startswith(wanted) or "infra/cli" in where or "infra/bootstrap" in where:
            continue
        out.write(f"  {min(999.9, v[3] / busy * 100):5.1f}%  {v[3]:7.2f}s  {v[1]:>9,} calls  {where}\n")
        shown += 1
        if shown >= top:
            break
    return out.getvalue()


# ------------------------------------------------------------------------------ cleanup

async def delete_topics(bootstrap: str, prefix: str) -> None:
    from aiokafka.admin import AIOKafkaAdminClient
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        names = [t for t in await admin.list_topics() if t.startswith(prefix + ".")]
        if names:
            await admin.delete_topics(names)
    finally:
        await admin.close()


def drop_read_models(database_url: str, prefix: str) -> None:
    """Drop the projection schemas (`<prefix>_<name>_g<N>`) and registry rows (`<prefix>:<name>`)
    the bench's servers created."""
    import psycopg
    from psycopg import sql
    with psycopg.connect(database_url, autocommit=True) as conn:
        for (schema,) in conn.execute("SELECT nspname FROM pg_namespace WHERE nspname LIKE %s",
                                      (prefix.lower() + "\\_%",)).fetchall():
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))
        if conn.execute("SELECT to_regclass('public.runledger_projections')").fetchone()[0]:
            conn.execute("DELETE FROM public.runledger_projections WHERE name LIKE %s", (prefix + ":%",))


# ------------------------------------------------------------------------------ main

def machine() -> str:
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = ""
    try:
        with open("/proc/meminfo") as f:
            mem = f"{int(f.readline().split()[1]) / 1024 / 1024:.0f} GiB RAM"
    except (OSError, ValueError):
        pass
    return f"{platform.node()}: {os.cpu_count()} CPUs ({cpu}), {mem}, {platform.system()} {platform.release()}, Python {platform.python_version()}"


async def main(args) -> Report:
    import httpx
    report = Report()
    nofile = raise_nofile()
    CpuMeter.home = args.stack_home
    need = args.subscribers // max(1, args.client_procs) + 200
    if "fanout" in args.only and nofile < need:
        report.notes.append(f"open-files limit {nofile} is below the {need} a client process needs")
    workdir = Path(tempfile.mkdtemp(prefix="rlstreams-"))
    stack = Stack(args, workdir)
    ctx = mp.get_context("spawn")
    log(f"servers: prefix {stack.prefix}, port {stack.port}, layout {args.layout}, logs in {workdir}")
    stack.start()
    try:
        limits = httpx.Limits(max_connections=1000, max_keepalive_connections=64)
        timeout = httpx.Timeout(130.0, pool=None)   # the server gives up on an outcome after 120 s
        async with httpx.AsyncClient(base_url=stack.url, timeout=timeout, limits=limits) as http:
            if "fanout" in args.only:
                await fanout(args, stack, ctx, http, report)
            if "replay" in args.only:
                await replay(args, stack, ctx, http, report)
    except Exception as error:  # noqa: BLE001
        report.errors.append(f"{type(error).__name__}: {error}")
        traceback.print_exc()
    finally:
        log("stopping the servers")
        stack.stop()
        summaries = []
        for name, path in stack.profiles():
            if path.exists():
                try:
                    summaries.append(f"=== {name} ({path})\n" + profile_summary(path, args.profile_top))
                except Exception as error:  # noqa: BLE001
                    report.notes.append(f"could not read the profile {path}: {error!r}")
            else:
                report.notes.append(f"no profile was written to {path} (see {workdir})")
        if summaries:
            report.data["profile"] = "\n".join(summaries)
        if not args.keep:
            try:
                await delete_topics(args.bootstrap, stack.prefix)
            except Exception as error:  # noqa: BLE001
                report.notes.append(f"could not delete the bench topics: {error!r}")
            try:
                await asyncio.to_thread(drop_read_models, args.database_url, stack.prefix)
            except Exception as error:  # noqa: BLE001
                report.notes.append(f"could not drop the bench read models: {error!r}")
            for path in workdir.glob("chdb-*"):
                shutil.rmtree(path, ignore_errors=True)
    report.data["workdir"] = str(workdir)
    return report


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--bootstrap", default=os.environ.get("RUNLEDGER_KAFKA_BOOTSTRAP")
                   or os.environ.get("KAFKA_BOOTSTRAP"), help="Kafka bootstrap (required)")
    p.add_argument("--database-url", default=os.environ.get("RUNLEDGER_DATABASE_URL")
                   or os.environ.get("DATABASE_URL"), help="PostgreSQL URL (required)")
    p.add_argument("--quick", action="store_true",
                   help="1,000 subscribers, 10 s at 20 cmd/s, 20,000 replay events, 2 replay runs")
    p.add_argument("--subscribers", type=int, default=None, help="fan-out subscribers (default 10,000)")
    p.add_argument("--client-procs", type=int, default=2, help="client processes the subscribers are split over")
    p.add_argument("--connect-concurrency", type=int, default=100, help="connects in flight per client process")
    p.add_argument("--rates", default="1,20", help="comma-separated commands/s, one measured window each (ascending)")
    p.add_argument("--duration", type=float, default=None, help="seconds per rate (default 20)")
    p.add_argument("--baseline-duration", type=float, default=None,
                   help="seconds of the highest rate with one subscriber before the fan-out (0: skip; default 10)")
    p.add_argument("--drain-timeout", type=float, default=300.0,
                   help="after the last command, wait at most this long for every subscriber to get everything")
    p.add_argument("--replay-events", type=int, default=None, help="events pre-filled for the replay (default 100,000)")
    p.add_argument("--replay-runs", type=int, default=None, help="timed replays (default 3)")
    p.add_argument("--replay-timeout", type=float, default=300.0)
    p.add_argument("--prefill-timeout", type=float, default=1800.0)
    p.add_argument("--start-timeout", type=float, default=120.0)
    p.add_argument("--only", default="replay,fanout", help="phases to run: replay, fanout")
    p.add_argument("--layout", choices=("one", "split"), default="one",
                   help="one: a single `serve` (API + processor + projectors); split: an API-only "
                        "`serve --no-processor --no-projectors` plus `serve --no-api`")
    p.add_argument("--partitions", type=int, default=3)
    p.add_argument("--stack-home", default=os.environ.get("RUNLEDGER_HOME"),
                   help="infra/local/stack.sh home: report the CPU of its PostgreSQL and Kafka apart")
    p.add_argument("--profile", default=None, help="profile the API server during each measured window; stats go to FILE.1, FILE.2, ...")
    p.add_argument("--profile-top", type=int, default=25)
    p.add_argument("--serve-entry", default="infra.cli",
                   help="module (or .py file) started as `python -m MODULE serve` (A/B runs of a patch)")
    p.add_argument("--json", default=None, help="also write every number here")
    p.add_argument("--keep", action="store_true", help="keep the bench topics and read-model schemas")
    args = p.parse_args(argv)
    if not args.bootstrap or not args.database_url:
        p.error("set RUNLEDGER_KAFKA_BOOTSTRAP and RUNLEDGER_DATABASE_URL (or --bootstrap/--database-url)")
    args.subscribers = args.subscribers or (1_000 if args.quick else 10_000)
    args.duration = args.duration or (10.0 if args.quick else 20.0)
    if args.baseline_duration is None:
        args.baseline_duration = 5.0 if args.quick else 10.0
    args.replay_events = args.replay_events or (20_000 if args.quick else 100_000)
    args.replay_runs = args.replay_runs or (2 if args.quick else 3)
    args.rates = [float(r) for r in args.rates.split(",") if r.strip()]
    args.only = {o.strip() for o in args.only.split(",") if o.strip()}
    if not args.only <= {"replay", "fanout"}:
        p.error("--only takes replay and/or fanout")
    return args


PROFILED_SERVE = "--profiled-serve"


def profiled_serve(out: str, entry: str, argv: list[str]) -> None:
    """Run `serve` (infra.cli, or the --serve-entry) in this process; SIGUSR1 starts cProfile,
    SIGUSR2 stops it and writes OUT.<k> for the k-th window."""
    import cProfile
    import runpy
    state: dict[str, Any] = {"profiler": None, "count": 0}

    def start(*_: Any) -> None:
        if state["profiler"] is None:
            state["profiler"] = cProfile.Profile()
            state["profiler"].enable()

    def stop(*_: Any) -> None:
        profiler = state["profiler"]
        if profiler is not None:
            profiler.disable()
            state["count"] += 1
            profiler.dump_stats(f"{out}.{state['count']}")
            state["profiler"] = None
    signal.signal(signal.SIGUSR1, start)
    signal.signal(signal.SIGUSR2, stop)
    sys.argv = [entry, *argv]
    os.chdir(ROOT)
    if entry.endswith(".py"):
        runpy.run_path(entry, run_name="__main__")
    else:
        runpy.run_module(entry, run_name="__main__", alter_sys=True)


def run() -> int:
    if len(sys.argv) > 3 and sys.argv[1] == PROFILED_SERVE:
        profiled_serve(sys.argv[2], sys.argv[3], sys.argv[4:])
        return 0
    args = parse_args()
    started = datetime.now(timezone.utc)
    report = asyncio.run(main(args))
    print()
    print(f"runledger SSE streams benchmark — {started:%Y-%m-%d %H:%M} UTC")
    print(machine())
    print(f"layout {args.layout}; {args.subscribers:,} subscribers over {args.client_procs} client process(es); "
          f"rates {', '.join(f'{r:g}' for r in args.rates)} cmd/s × {args.duration:g} s; "
          f"replay {args.replay_events:,} events" + ("; API server under cProfile" if args.profile else ""))
    print()
    print(report.table())
    for note in report.notes:
        print(f"note: {note}")
    for error in report.errors:
        print(f"ERROR: {error}")
    if "profile" in report.data:
        print()
        print(report.data["profile"])
    if args.json:
        report.data.update({"rows": [r.__dict__ for r in report.rows], "notes": report.notes,
                            "errors": report.errors, "started": started.isoformat(), "machine": machine(),
                            "args": {k: (sorted(v) if isinstance(v, set) else v) for k, v in vars(args).items()}})
        Path(args.json).write_text(json.dumps(report.data, indent=2, default=str))
    return 1 if report.errors else 0


if __name__ == "__main__":
    sys.exit(run())
