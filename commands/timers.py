"""Approval expiry and retention sweeps, queued behind the partition's work as system commands.

Each timer interval, what is due becomes an ExpireApproval; each sweep interval, every tenant with
runs gets a SweepRetention per record class (decided like any command: holds first, and nothing
appended when nothing is due). Timers are not stored anywhere: each tenant ledger knows its
pending expiries and its run families from the log, so a processor that takes a partition over
fires them too.
"""
import asyncio
import time
from datetime import datetime
from typing import Callable

from commands.ownership import Ownership
from commands.worker import Worker
from domain.governing import sweep_commands
from domain.ledger import expire_command


class Timers:
    def __init__(self, interval_s: float, ownership: Ownership, worker: Worker, clock: Callable[[], datetime],
                 sweep_interval_s: float = 0.0):
        self.interval_s, self.ownership, self.worker, self.clock = interval_s, ownership, worker, clock
        self.sweep_interval_s = sweep_interval_s
        self.next_at = 0.0
        self.next_sweep_at = time.monotonic() + sweep_interval_s

    def sweeping(self) -> bool:
        """Whether this turn also sweeps (every sweep interval; never when the interval is 0)."""
        if not self.sweep_interval_s or time.monotonic() < self.next_sweep_at:
            return False
        self.next_sweep_at = time.monotonic() + self.sweep_interval_s
        return True

    def fire(self) -> None:
        """Every interval, start one expiry transaction per partition that has due approvals and none running."""
        if time.monotonic() < self.next_at:
            return
        self.next_at = time.monotonic() + self.interval_s
        now, sweeping = self.clock(), self.sweeping()
        for owner in list(self.ownership.owners.values()):
            if owner.timer is not None and not owner.timer.done():
                continue
            due = [expire_command(t.tenant_id, a, now) for t in owner.tenants.values() for a in t.due_expiries(now)]
            if sweeping:
                due += [c for t in owner.tenants.values() if t.families.runs for c in sweep_commands(t.tenant_id, now)]
            if due:
                owner.timer = asyncio.create_task(self.worker.guarded(owner, due, None, reply=False))
