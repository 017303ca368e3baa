"""Client processes: each holds many subscribers and answers the parent over a multiprocessing pipe."""
from __future__ import annotations

import array
import asyncio
import json
import resource
import signal
import time
from datetime import datetime
from typing import Any

from bench.streams.sse import Sub


def raise_nofile() -> int:
    """Raise the soft open-files limit to the hard one (each subscriber is one socket here and one in the server)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        return hard
    return soft if hard == resource.RLIM_INFINITY else hard


class Worker:
    """A client process's subscribers, the ids and latencies they received, and the requests it answers."""

    def __init__(self, conn, host: str, port: int):
        self.conn, self.host, self.port = conn, host, port
        self.subs: list[Sub] = []
        self.recorded: dict[int, float] = {}
        self.mismatch = 0
        self.reset(0)
        self.stop = asyncio.Event()

    def reset(self, target: int) -> None:
        self.ids = array.array("I")
        self.lat = array.array("d")
        self.target = target if target else 1 << 62

    def received(self, seq: int, data: bytes | None, now: float) -> None:
        recorded = self.recorded.get(seq)
        if recorded is None:
            recorded = self.learn(seq, data)
        self.ids.append(seq)
        self.lat.append(now - recorded)

    def learn(self, seq: int, data: bytes | None) -> float:
        """recorded_at of an event (parsed once per id), and a check that the SSE id is its chain_seq."""
        body = json.loads(data) if data else {}
        recorded = datetime.fromisoformat(body["recorded_at"]).timestamp() if "recorded_at" in body else float("nan")
        if body.get("chain_seq") != seq:
            self.mismatch += 1
        self.recorded[seq] = recorded
        return recorded

    async def open_one(self, request: bytes, after: int, gate: asyncio.Semaphore, failures: list[str]) -> None:
        async with gate:
            sub = Sub(self, request, after)
            try:
                await asyncio.get_running_loop().create_connection(lambda: sub, self.host, self.port)
                ok = await asyncio.wait_for(sub.ready, 120)
            except (OSError, asyncio.TimeoutError) as error:
                sub.error, ok = repr(error), False
            if ok:
                self.subs.append(sub)
            else:
                failures.append(sub.error or "closed before the response")
                sub.close()

    async def open(self, count: int, path: str, token: str, after: int | None, concurrency: int) -> dict:
        request = (f"GET {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
                   f"Authorization: Bearer {token}\r\nAccept: text/event-stream\r\n"
                   + (f"Last-Event-ID: {after}\r\n" if after is not None else "") + "\r\n").encode()
        gate, failures, started = asyncio.Semaphore(concurrency), [], time.time()
        await asyncio.gather(*(self.open_one(request, after or 0, gate, failures) for _ in range(count)))
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
        result = {"subs": [(s.after, s.last, s.count, s.gaps, s.dups, s.lost, s.error, s.notices[:3],
                            s.first_at, s.done_at) for s in self.subs],
                  "ids": self.ids.tobytes(), "lat": self.lat.tobytes(), "mismatch": self.mismatch}
        self.subs, self.mismatch = [], 0
        self.recorded.clear()
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
        elif op == "target":
            self.target = kw["target"]
            self.conn.send(True)
        elif op in ("progress", "finish"):
            self.conn.send(getattr(self, op)())
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
        if not await asyncio.to_thread(self.conn.poll, timeout):
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
