"""The faults: SIGKILL a role and start it again, SIGKILL the broker and start it again, stop PostgreSQL and
start it again, SIGKILL PostgreSQL (the postmaster and every backend, as a crash would) and start it again.

The first six faults are one of each kind in a seeded order; then random role kills until the run's
seconds are spent. Each fault is measured before the next one: `accepting` is when every tenant had a
command sent after the fault accepted, `streaming` when every tenant's SSE follower had received an
event of such a command. Both are kept as seconds from the fault and from the restart; nothing is
asserted on them.
"""
import asyncio
import random
import statistics
import time
from dataclasses import dataclass

from tests.chaos.load import Load
from tests.chaos.roles import Cluster
from tests.chaos.sse import Follower
from tests.e2e.test_outages import kill_broker
from tests.own_stack import OwnStack

ROLE_KINDS = ("processor", "projector", "api")
KINDS = (*ROLE_KINDS, "broker", "postgres", "pg_kill")
RECOVERY_GIVE_UP_S = 180  # a fault not recovered from by then is written down as such (the judge fails on it)


@dataclass
class Fault:
    kind: str
    target: str
    at: float
    restarted_at: float | None = None
    accepting_at: float | None = None
    streaming_at: float | None = None

    def seconds(self, what: str, since: str) -> float | None:
        end, start = getattr(self, f"{what}_at"), self.at if since == "fault" else self.restarted_at
        return None if end is None or start is None else end - start


def streaming_since(load: Load, followers: list[Follower], since: float) -> float | None:
    """When every follower had received an event of a command of its tenant sent at or after `since`."""
    firsts = []
    for follower in followers:
        seqs = {e["chain_seq"] for a in load.accepted if a.tenant == follower.tenant and a.sent_at >= since
                for e in a.body["events"]}
        seen = [at for _, seq, at in follower.received if seq in seqs]
        if not seen:
            return None
        firsts.append(min(seen))
    return max(firsts)


async def recovered(fault: Fault, load: Load, followers: list[Follower]) -> None:
    """Note when every tenant was accepting and streaming again after the fault (or give up, leaving None)."""
    deadline = time.monotonic() + RECOVERY_GIVE_UP_S
    while time.monotonic() < deadline and (fault.accepting_at is None or fault.streaming_at is None):
        fault.accepting_at = fault.accepting_at or load.all_accepting_since(fault.at)
        fault.streaming_at = fault.streaming_at or streaming_since(load, followers, fault.at)
        await asyncio.sleep(0.2)


class Chaos:
    def __init__(self, stack: OwnStack, cluster: Cluster, load: Load, followers: list[Follower], rng: random.Random):
        self.stack, self.cluster, self.load, self.followers, self.rng = stack, cluster, load, followers, rng
        self.faults: list[Fault] = []

    def plan(self) -> list[str]:
        first = list(KINDS)
        self.rng.shuffle(first)
        return first

    async def run(self, seconds: float, say) -> None:
        ends_at, kinds = time.monotonic() + seconds, self.plan()
        while kinds or time.monotonic() < ends_at:
            kind = kinds.pop(0) if kinds else self.rng.choice(ROLE_KINDS)
            fault = await self.inject(kind)
            await self.recovered(fault)
            say(f"fault {len(self.faults)}: {fault.kind} {fault.target}: accepting "
                f"{fmt(fault.seconds('accepting', 'fault'))} s, streaming {fmt(fault.seconds('streaming', 'fault'))} s "
                f"after the fault")
            await asyncio.sleep(self.rng.uniform(3, 8))  # steady load between faults (the gap is the plan, not a wait)

    async def inject(self, kind: str) -> Fault:
        down_s = self.rng.uniform(0.5, 3) if kind in ROLE_KINDS else self.rng.uniform(1, 4)
        if kind in ROLE_KINDS:
            role = self.rng.choice(self.cluster.of_kind(kind))
            fault = Fault(kind, role.name, time.monotonic())
            role.sigkill()
            await asyncio.sleep(down_s)  # how long the role stays down: part of the fault
            role.restart()
        elif kind == "broker":
            fault = Fault(kind, f"broker :{self.stack.kafka_port}", time.monotonic())
            await kill_broker(self.stack)
            await asyncio.sleep(down_s)
            await asyncio.to_thread(self.stack.up)
        else:
            fault = Fault(kind, f"postgres :{self.stack.pg_port}", time.monotonic())
            await asyncio.to_thread(self.stack.stop_postgres if kind == "postgres" else self.stack.kill_postgres)
            await asyncio.sleep(down_s)
            await asyncio.to_thread(self.stack.up)
        fault.restarted_at = time.monotonic()
        self.faults.append(fault)
        return fault

    async def recovered(self, fault: Fault) -> None:
        await recovered(fault, self.load, self.followers)

    def table(self) -> list[str]:
        head = (f"{'fault':<10}{'n':>3}  {'accepting from fault p50/max':>30}  {'from restart p50/max':>22}  "
                f"{'streaming from fault p50/max':>30}")
        rows = [head]
        for kind in KINDS:
            these = [f for f in self.faults if f.kind == kind]
            cells = [spread([f.seconds(w, s) for f in these]) for w, s in
                     (("accepting", "fault"), ("accepting", "restart"), ("streaming", "fault"))]
            rows.append(f"{kind:<10}{len(these):>3}  {cells[0]:>30}  {cells[1]:>22}  {cells[2]:>30}")
        return rows

    def unrecovered(self) -> list[str]:
        return [f"{f.kind} {f.target}" for f in self.faults if f.accepting_at is None or f.streaming_at is None]


def fmt(value: float | None) -> str:
    return "never" if value is None else f"{value:.1f}"


def spread(values: list[float | None]) -> str:
    if not values:
        return "-"
    if any(v is None for v in values):
        return f"{sum(v is None for v in values)} never"
    return f"{statistics.median(values):.1f} / {max(values):.1f}"
