"""One measured cell: a client at a batch size, its window (after its first transaction), latencies and CPU."""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

from bench.lib.measure import Dist, Window
from bench.lib.meters import cpu_seconds


@dataclass
class Cell:
    """Counts and CPU over the measured window; the first transaction (group join, first fetch) is warm-up."""
    client: str
    batch: int
    duration_s: float
    broker_pid: int | None = None
    latencies_ms: list[float] = field(default_factory=list)
    commands: int = 0
    transactions: int = 0
    started: float | None = None
    ended: float | None = None
    cpu: dict[str, float] = field(default_factory=dict)
    _cpu0: dict[str, float | None] = field(default_factory=dict)

    def open(self) -> None:
        self.started = self.ended = time.perf_counter()
        self._cpu0 = self.cpu_now()

    def cpu_now(self) -> dict[str, float | None]:
        now = {"client": cpu_seconds(os.getpid())}
        if self.broker_pid:
            now["broker"] = cpu_seconds(self.broker_pid)
        return now

    def done(self) -> bool:
        return self.started is not None and time.perf_counter() - self.started >= self.duration_s

    def committed(self, commands: int, began: float) -> None:
        """Count a transaction of `commands` that began at `began` and has just committed."""
        now = time.perf_counter()
        if self.started is None:  # the warm-up transaction
            self.open()
            return
        self.latencies_ms.append((now - began) * 1000)
        self.commands += commands
        self.transactions += 1
        self.ended = now

    def close(self) -> None:
        end = self.cpu_now()
        self.cpu = {k: (end[k] or 0.0) - (v or 0.0) for k, v in self._cpu0.items() if end.get(k) is not None}

    @property
    def records(self) -> Window:
        """Records produced: one event and one reply per command."""
        return Window(2 * self.commands, self.seconds, "records")

    @property
    def txns(self) -> Window:
        return Window(self.transactions, self.seconds, "transactions")

    @property
    def seconds(self) -> float:
        return (self.ended - self.started) if self.started is not None else 0.0

    @property
    def latency(self) -> Dist:
        return Dist.of(self.latencies_ms)

    def cpu_per_1000(self, who: str = "client") -> float:
        records = 2 * self.commands
        return self.cpu.get(who, float("nan")) / records * 1000 if records else float("nan")

    def broker_ms_per_txn(self, idle_cores: float) -> float:
        """Broker CPU ms per transaction, less what the broker burns idle over the same window."""
        if "broker" not in self.cpu or not self.transactions:
            return float("nan")
        return (self.cpu["broker"] - idle_cores * self.seconds) / self.transactions * 1000


@dataclass
class Raw:
    """Non-transactional produce of `records` records with one client."""
    client: str
    records: int
    seconds: float
    cpu_s: float

    @property
    def window(self) -> Window:
        return Window(self.records, self.seconds, "records")

    @property
    def cpu_per_1000(self) -> float:
        return self.cpu_s / self.records * 1000 if self.records else float("nan")


class CpuClock:
    """This process's CPU seconds (every thread, so librdkafka's too) over a stretch of code."""

    def __enter__(self) -> "CpuClock":
        self.start = cpu_seconds(os.getpid()) or 0.0
        self.wall0 = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.seconds = time.perf_counter() - self.wall0
        self.cpu = (cpu_seconds(os.getpid()) or 0.0) - self.start
