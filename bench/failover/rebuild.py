"""Phase rebuild: how a takeover's rebuild grows with the log, from offset 0 and from a derived snapshot.

For each size, a one-partition topic set is prefilled with that many events (and their replies),
decided in this process by the domain's own TenantLedger and produced in bulk. Then the
processor's own Ownership rebuilds the partition: from offset 0 (no snapshot store), then after a
snapshot was taken and TAIL more events were appended, from that snapshot, and from a follower's fold
(commands/following.py) that caught up before those TAIL. Every fold must equal the one from offset 0.
While the snapshot is taken and while the partition is rebuilt from it, a ticker on the same loop records the
longest the loop went without running it: what a group's heartbeat would have waited (session timeout 3 s).
"""
from __future__ import annotations

import asyncio
import secrets
import time
import uuid
from datetime import datetime, timezone

from aiokafka import AIOKafkaProducer

from bench.lib.report import Report
from bench.lib.topics import bench_settings, delete_topics
from bench.write.workload import run_steps
from commands.following import Follower
from commands.ownership import Ownership, PartitionOwner
from commands.snapshots_pg import PgSnapshots
from domain.ledger import TenantLedger
from infra.adapters import kafka
from infra.adapters.eventlog.kafka import KafkaLog
from schemas.envelope import encode

TAIL = 1_000
TENANTS = 4
SIGNING_KEY = "ZmFpbG92ZXItYmVuY2gtc2lnbmluZy1rZXktMzJieXQ="  # 32 bytes, base64: the MAC key's seed


class Stalls:
    """The longest gap between two turns of a ticker task on this loop while the block runs."""

    def __init__(self) -> None:
        self.longest_s = 0.0
        self.task: asyncio.Task | None = None

    async def tick(self) -> None:
        last = time.perf_counter()
        while True:
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            self.longest_s, last = max(self.longest_s, now - last), now

    async def __aenter__(self) -> "Stalls":
        self.task = asyncio.create_task(self.tick())
        await asyncio.sleep(0)
        return self

    async def __aexit__(self, *exc) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


class Prefill:
    """Tenant ledgers deciding run commands; what they append goes to partition 0 of events and replies."""

    def __init__(self, settings, tenants: int):
        self.settings = settings
        self.ledgers = [TenantLedger(f"rb-{i}") for i in range(tenants)]
        self.runs = 0
        self.producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, enable_idempotence=True,
                                         acks="all", linger_ms=20, max_batch_size=1024 * 1024)

    def command(self, tenant: str, body: dict, key: str | None) -> dict:
        return {"command_id": str(uuid.uuid4()), "tenant_id": tenant, "idempotency_key": key,
                "request_digest": secrets.token_hex(8), "actor": {"subject": "bench", "roles": ["operator"]},
                "body": body}

    async def events(self, count: int) -> None:
        s, now, made, sends = self.settings, datetime.now(timezone.utc), 0, []
        while made < count:
            ledger = self.ledgers[self.runs % len(self.ledgers)]
            run_id = str(uuid.uuid4())
            for step, body in enumerate(run_steps(run_id, self.runs)):
                reply, envelopes = ledger.execute(self.command(ledger.tenant_id, body, run_id if step == 0 else None),
                                                  now)
                key = ledger.tenant_id.encode()
                for env in envelopes:
                    sends.append(await self.producer.send(s.events_topic, encode(env), key=key, partition=0))
                sends.append(await self.producer.send(s.replies_topic, kafka.dumps(reply), key=key, partition=0))
                made += len(envelopes)
            self.runs += 1
            if len(sends) >= 20_000:
                await asyncio.gather(*sends)
                sends.clear()
        await asyncio.gather(*sends)


def state_of(owner: PartitionOwner) -> dict:
    return {t: (l.chain.head_seq, l.chain.head_hash, len(l.aggregates), len(l.replies), l.tree.size)
            for t, l in sorted(owner.tenants.items())}


async def rebuilt(settings, store, follower: Follower | None = None) -> tuple[float, PartitionOwner, Ownership, int]:
    ownership = Ownership(settings, KafkaLog(settings), {"rebuilds": 0}, snapshots=store)
    ownership.follower = follower  # None: the takeover of a member that followed nothing
    owner = PartitionOwner(0, None)  # type: ignore[arg-type]  # a rebuild never writes
    started = time.perf_counter()
    replayed = await ownership.rebuild(owner)
    return time.perf_counter() - started, owner, ownership, replayed


async def caught_up(follower: Follower) -> float:
    """Let the follower fold partition 0 up to the log's end (from the snapshot): the seconds it took."""
    reader = follower.log.reader()
    await reader.start()
    started = time.perf_counter()
    try:
        await follower.round(reader)
    finally:
        await reader.stop()
    return time.perf_counter() - started


async def one_size(args, report: Report, size: int, log) -> None:
    prefix = "benchrb" + secrets.token_hex(4)
    settings = bench_settings(args.bootstrap, prefix, 1, secrets.token_urlsafe(48), args.database_url,
                              signing_key=SIGNING_KEY, snapshot_every=1)
    await kafka.ensure_topics(settings)
    prefill = Prefill(settings, TENANTS)
    await prefill.producer.start()
    try:
        started = time.perf_counter()
        await prefill.events(size)
        log(f"prefilled {size:,} events in {time.perf_counter() - started:.1f} s")
        full_s, owner, ownership, replayed = await rebuilt(settings, None)
        store = PgSnapshots(args.database_url, transfer_timeout_s=600)
        ownership.snapshotter.store = store
        ownership.owners[0] = owner
        started = time.perf_counter()
        async with Stalls() as taking:
            await ownership.snapshot(owner)
        taken_s = time.perf_counter() - started
        follower = Follower(KafkaLog(settings), ownership.snapshotter, ownership.terms, lambda: {0})
        follower_s = await caught_up(follower)
        await prefill.events(TAIL)
        async with Stalls() as restoring:
            snap_s, from_snapshot, _, tail = await rebuilt(settings, store)
        async with Stalls() as taking_over:
            follow_s, from_follower, _, _ = await rebuilt(settings, store, follower)
        check_s, from_zero, _, _ = await rebuilt(settings, None)
    finally:
        await prefill.producer.stop()
        await delete_topics(args.bootstrap, [prefix])
    same = state_of(from_snapshot) == state_of(from_zero)
    same_followed = state_of(from_follower) == state_of(from_zero) and from_follower.followed is not None
    report.info("rebuild", f"{size:,} events: from offset 0", f"{full_s:.2f} s ({replayed:,} events replayed)")
    report.info("rebuild", f"{size:,} events: snapshot taken", f"{taken_s:.2f} s under the lock and saved "
                f"({owner.snapshot_events:,} events)")
    report.info("rebuild", f"{size:,} events: longest loop stall", f"{taking.longest_s * 1000:,.0f} ms while the "
                f"snapshot was taken, {restoring.longest_s * 1000:,.0f} ms while rebuilding from it")
    report.check("rebuild", f"{size:,} + {TAIL:,} events: from its snapshot",
                 f"{snap_s:.2f} s ({tail:,} replayed; from 0 it takes {check_s:.2f} s)",
                 "same fold as from offset 0", same)
    report.info("rebuild", f"{size:,} events: a follower catching up", f"{follower_s:.2f} s from the snapshot, "
                "in the background before any takeover")
    report.check("rebuild", f"{size:,} + {TAIL:,} events: from a follower's fold",
                 f"{follow_s:.2f} s ({from_follower.followed or 0:,} folded beforehand; longest loop stall "
                 f"{taking_over.longest_s * 1000:,.0f} ms)", "same fold as from offset 0", same_followed)
    report.data.setdefault("rebuild", []).append({"events": size, "from_zero_s": full_s, "snapshot_taken_s": taken_s,
                                                  "from_snapshot_s": snap_s, "tail": tail, "zero_with_tail_s": check_s,
                                                  "same_fold": same, "stall_taking_s": taking.longest_s,
                                                  "stall_restoring_s": restoring.longest_s,
                                                  "follower_catch_up_s": follower_s, "from_follower_s": follow_s,
                                                  "same_fold_followed": same_followed,
                                                  "stall_following_s": taking_over.longest_s})


async def rebuild_phase(args, report: Report, log) -> None:
    if not args.database_url:
        report.errors.append("the rebuild phase keeps its snapshots in PostgreSQL: give --database-url")
        return
    for size in args.rebuild_sizes:
        await one_size(args, report, size, log)
