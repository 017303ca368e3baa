"""Approval expiry and retention sweeps, queued behind the partition's work as system commands.

Each timer interval, what is due becomes an ExpireApproval; each sweep interval, every tenant with
runs gets a SweepRetention per record class (decided like any command: holds first, and nothing
appended when nothing is due). Timers are not stored anywhere: each tenant ledger knows its
pending expiries and its run families from the log, so a processor that takes a partition over
fires them too. Each second, a partition with RUNLEDGER_SNAPSHOT_EVERY events more than its last
fold snapshot gets a new one (commands/ownership.py), so a successor replays only what follows.
"""
import asyncio
import time
from datetime import datetime
from typing import Callable

from commands.ownership import Ownership
from commands.worker import Worker
from domain.evidence import checkpoint_command
from domain.governing import sweep_commands
from domain.ledger import expire_command
from schemas.envelope import iso


class Timers:
    def __init__(self, interval_s: float, ownership: Ownership, worker: Worker, clock: Callable[[], datetime],
                 sweep_interval_s: float = 0.0, checkpoint_interval_s: float = 0.0, checkpoint_every: int = 0):
        self.interval_s, self.ownership, self.worker, self.clock = interval_s, ownership, worker, clock
        self.sweep_interval_s = sweep_interval_s
        self.next_at = 0.0
        self.next_sweep_at = time.monotonic() + sweep_interval_s
        self.checkpoint_interval_s, self.checkpoint_every = checkpoint_interval_s, checkpoint_every
        self.next_checkpoint_at = time.monotonic() + checkpoint_interval_s
        self.next_snapshot_check = 0.0

    def snapshots(self) -> None:
        """Start a fold snapshot of each owned partition that is due one (checked once a second)."""
        if time.monotonic() < self.next_snapshot_check:
            return
        self.next_snapshot_check = time.monotonic() + 1.0
        for owner in list(self.ownership.owners.values()):
            if self.ownership.snapshot_due(owner):
                self.ownership.start_snapshot(owner)

    def checkpointing(self) -> bool:
        """Whether this turn signs every tenant with unsigned events (every checkpoint interval)."""
        if not self.checkpoint_interval_s or time.monotonic() < self.next_checkpoint_at:
            return False
        self.next_checkpoint_at = time.monotonic() + self.checkpoint_interval_s
        return True

    def checkpoints(self, tenants, now_iso: str, all_due: bool) -> list[dict]:
        """SignCheckpoint for each tenant N events behind its last checkpoint, or any behind when all are due."""
        if not self.checkpoint_every and not all_due:
            return []
        return [checkpoint_command(t.tenant_id, now_iso) for t in tenants if t.signer is not None and t.unsigned
                and (all_due or t.unsigned >= self.checkpoint_every)]

    def sweeping(self) -> bool:
        """Whether this turn also sweeps (every sweep interval; never when the interval is 0)."""
        if not self.sweep_interval_s or time.monotonic() < self.next_sweep_at:
            return False
        self.next_sweep_at = time.monotonic() + self.sweep_interval_s
        return True

    def fire(self) -> None:
        """Every interval, start one expiry transaction per partition that has due approvals and none running."""
        self.snapshots()
        if time.monotonic() < self.next_at:
            return
        self.next_at = time.monotonic() + self.interval_s
        now, sweeping, checkpointing = self.clock(), self.sweeping(), self.checkpointing()
        for owner in list(self.ownership.owners.values()):
            if owner.timer is not None and not owner.timer.done():
                continue
            due = [expire_command(t.tenant_id, a, now) for t in owner.tenants.values() for a in t.due_expiries(now)]
            due += self.checkpoints(owner.tenants.values(), iso(now), checkpointing)
            if sweeping:
                due += [c for t in owner.tenants.values() if t.families.runs for c in sweep_commands(t.tenant_id, now)]
            if due:
                owner.timer = asyncio.create_task(self.worker.guarded(owner, due, None, reply=False))
