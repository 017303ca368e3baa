"""Steady commands on every partition (one tenant each, a new run per command) and when each partition's replies arrive.

Each partition's replies are read from a tail on `ledger.replies` (read_committed), so a reply counts
when its transaction committed. A reply at or past the offset the partition's reply log ended at
just after a kill was committed after the kill, so by a successor: the killed owner cannot commit.
"""
from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import defaultdict

from aiokafka import TopicPartition

from bench.lib.tenants import probe_tenants, spread_tenants
from bench.write.workload import traceparent
from commands.intake import command_envelope
from infra.adapters import kafka
from infra.adapters.http.auth import authenticate, mint
from infra.adapters.settings import Settings


class Load:
    def __init__(self, settings: Settings, rate: float):
        self.settings, self.rate = settings, rate
        self.tenants = probe_tenants(spread_tenants(settings.partitions, settings.partitions, "fo"),
                                     settings.partitions)
        secret = settings.jwt_secret.get_secret_value()
        self.principals = {t: authenticate(mint(secret, t, f"agent:{t}", ["operator"], settings.jwt_audience),
                                           secret, settings.jwt_audience) for t in self.tenants}
        self.accepted: dict[int, list[tuple[float, int]]] = defaultdict(list)  # partition → (monotonic, offset)
        self.rejected = 0
        self.producer = kafka.command_producer(settings)
        self.replies = kafka.reader(settings)
        self.tasks: list[asyncio.Task] = []

    async def start(self) -> None:
        await self.producer.start()
        await self.replies.start()
        tps = [TopicPartition(self.settings.replies_topic, p) for p in range(self.settings.partitions)]
        self.replies.assign(tps)
        await self.replies.seek_to_end(*tps)
        self.tasks = [asyncio.create_task(self.send_forever()), asyncio.create_task(self.read_forever())]

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.producer.stop()
        await self.replies.stop()

    def envelope(self, tenant: str) -> dict:
        body = {"type": "RequestRun", "run_id": str(uuid.uuid4()), "agent_id": "agent-fo", "project": "failover"}
        return command_envelope(self.principals[tenant], json.dumps(body).encode(), None, traceparent(), None)

    async def send_forever(self) -> None:
        topic, period = self.settings.commands_topic, 1.0 / self.rate
        while True:
            started = time.monotonic()
            for tenant in self.tenants:
                await self.producer.send(topic, kafka.dumps(self.envelope(tenant)), key=tenant.encode())
            await asyncio.sleep(max(0.0, period - (time.monotonic() - started)))

    async def read_forever(self) -> None:
        while True:
            batches = await self.replies.getmany(timeout_ms=100, max_records=10_000)
            now = time.monotonic()
            for tp, records in batches.items():
                for record in records:
                    if json.loads(record.value)["status"] == "accepted":
                        self.accepted[tp.partition].append((now, record.offset))
                    else:
                        self.rejected += 1

    async def reply_ends(self) -> dict[int, int]:
        tps = [TopicPartition(self.settings.replies_topic, p) for p in range(self.settings.partitions)]
        return {tp.partition: end for tp, end in (await self.replies.end_offsets(tps)).items()}

    def first_accept(self, partition: int, from_offset: int) -> float | None:
        """Monotonic time the first reply at or past from_offset arrived (None: none yet)."""
        return next((at for at, offset in self.accepted[partition] if offset >= from_offset), None)

    def accepting_since(self, partition: int, since: float) -> bool:
        return any(at >= since for at, _ in self.accepted[partition][-5:])
