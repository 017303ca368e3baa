"""Approval expiry: each timer interval, what is due becomes an ExpireApproval queued behind the partition's work.

Timers are not stored anywhere: each tenant ledger knows its pending expiries from the log
(approval.requested and its resolution), so a processor that takes a partition over fires them too.
"""
import asyncio
import time
from datetime import datetime
from typing import Callable

from commands.ownership import Ownership
from commands.worker import Worker
from domain.ledger import expire_command


class Timers:
    def __init__(self, interval_s: float, ownership: Ownership, worker: Worker, clock: Callable[[], datetime]):
        self.interval_s, self.ownership, self.worker, self.clock = interval_s, ownership, worker, clock
        self.next_at = 0.0

    def fire(self) -> None:
        """Every interval, start one expiry transaction per partition that has due approvals and none running."""
        if time.monotonic() < self.next_at:
            return
        self.next_at = time.monotonic() + self.interval_s
        now = self.clock()
        for owner in list(self.ownership.owners.values()):
            if owner.timer is not None and not owner.timer.done():
                continue
            due = [expire_command(t.tenant_id, a, now) for t in owner.tenants.values() for a in t.due_expiries(now)]
            if due:
                owner.timer = asyncio.create_task(self.worker.guarded(owner, due, None, reply=False))
