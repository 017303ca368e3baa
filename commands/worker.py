"""Deciding and appending: each owned partition's commands, in order, one Kafka transaction per batch.

Each owned partition commits on its own, so one slow transaction never holds back the others, and
whatever arrives while a transaction is open joins the next one. A transaction holds a batch's
events, their replies and the command offsets; if anything fails inside it, the partition's state
(which already moved on in memory) is dropped and rebuilt from the log before it decides again.
Sends are queued in order (the chain's order); the commit fails if any of them failed (the port's promise: the
aiokafka adapter awaits them before the offsets, aiokafka#1098; librdkafka's commit flushes them first).
"""
import asyncio
import json
import logging
from datetime import datetime
from typing import Any, Callable, Sequence

from opentelemetry.trace import Tracer

from commands import tracing
from commands.ownership import Ownership, PartitionOwner
from domain.ledger import ChainBroken, TenantLedger, Undecidable
from infra.adapters.eventlog import Fenced, LogError, NotAssigned, Record, TopicPartition
from infra.adapters.meters import ProcessorMeters, Tally, processor_meters
from infra.adapters.settings import Settings
from schemas.envelope import cloudevents_headers, encode, encode_json

log = logging.getLogger("runledger.processor")


def parse(record: Record) -> dict[str, Any] | None:
    try:
        command = json.loads(record.value)
    except (ValueError, TypeError):
        command = None
    if not isinstance(command, dict) or "command_id" not in command:
        log.error("skipping unreadable command record at offset %s", record.offset)
        return None
    return command


class Worker:
    def __init__(self, settings: Settings, ownership: Ownership, clock: Callable[[], datetime], stats: dict,
                 tracer: Tracer | None = None, meters: ProcessorMeters | None = None):
        self.settings, self.ownership, self.clock, self.stats = settings, ownership, clock, stats
        self.tracer = tracer or tracing.tracer()
        self.meters = meters or processor_meters(settings.commands_topic, settings.processor_group)
        self.content = ownership.content
        # Commands whose deciding raised a defect: after the rebuild they are refused, not retried
        # forever. Lost with the process, which is safe: a successor meets the defect once more.
        self.undecidable: dict[str, str] = {}

    def enqueue(self, tp: TopicPartition, records: list[Record]) -> None:
        """Hand records to the partition's worker; pause the partition while its backlog is full."""
        owner = self.ownership.owners.get(tp.partition)
        if owner is None:
            return
        owner.pending.extend(records)
        if len(owner.pending) >= self.settings.batch_max:
            owner.backlogged = True
            self.ownership.consumer.pause(tp)
        if owner.worker is None or owner.worker.done():
            owner.worker = asyncio.create_task(self.drain(tp, owner), name=f"partition-{tp.partition}")

    async def drain(self, tp: TopicPartition, owner: PartitionOwner) -> None:
        while owner.pending and self.ownership.owners.get(tp.partition) is owner:
            records = owner.pending[:self.settings.batch_max]
            del owner.pending[:len(records)]
            commands = [c for c in map(parse, records) if c is not None]
            await self.guarded(owner, commands, {tp: records[-1].offset + 1}, reply=True, records=records)
            if self.ownership.owners.get(tp.partition) is owner and len(owner.pending) < self.settings.batch_max:
                self.unblock(tp, owner)

    def unblock(self, tp: TopicPartition, owner: PartitionOwner) -> None:
        owner.backlogged = False
        try:
            self.ownership.consumer.resume(tp)
        except NotAssigned:
            pass  # revoked meanwhile: the release that follows takes the partition down

    async def guarded(self, owner: PartitionOwner, commands: list[dict[str, Any]],
                      offsets: dict[TopicPartition, int] | None, reply: bool, records: Sequence[Record] = ()) -> None:
        """Run one transaction; on any failure drop the partition so it is re-acquired afresh.

        `records`: the consumed command records (traced as one batch); none for timers."""
        async with owner.lock:
            if self.ownership.owners.get(owner.partition) is not owner:
                return
            tally = self.meters.tally(len(records), len(commands))
            try:
                await self.transact(owner, commands, offsets, reply, records, tally)
            except Fenced:
                self.stats["fenced"] += 1
                self.meters.aborted(tally, "fenced", owner.partition)
                await self.ownership.drop(owner, "fenced: another processor owns it", self.ownership.fenced_backoff_s)
            except Undecidable as error:
                self.stats["undecidable"] += 1
                self.meters.aborted(tally, "undecidable", owner.partition)
                self.undecidable[error.command_id] = error.kind
                log.exception("partition %s: %s; rebuilding, then refusing it", owner.partition, error)
                await self.ownership.drop(owner, f"transaction aborted ({error})", 0.0)
            except (ChainBroken, LogError) as error:
                self.meters.aborted(tally, "chain_broken" if isinstance(error, ChainBroken) else "log_error",
                                    owner.partition)
                await self.ownership.drop(owner, f"transaction failed ({error!r})", 0.0)
            except Exception as error:  # a defect outside deciding: never leave state ahead of the log
                self.meters.aborted(tally, "defect", owner.partition)
                log.exception("partition %s: transaction failed", owner.partition)
                await self.ownership.drop(owner, f"transaction failed ({error!r})", 1.0)

    async def transact(self, owner: PartitionOwner, commands: list[dict[str, Any]],
                       offsets: dict[TopicPartition, int] | None, reply: bool, records: Sequence[Record] = (),
                       tally: Tally | None = None) -> None:
        writer, s = owner.writer, self.settings
        tally = tally or self.meters.tally(len(records), len(commands))
        with tracing.consumed(self.tracer, s, owner.partition, records) as batch:
            rings = await self.content.rings(owner.tenant, commands)
            async with batch.transaction(writer.transaction()):
                with batch.sending(s.events_topic) as sending:
                    appended = await self.decide_and_send(owner, commands, rings, reply, batch, tally)
                    sending.sent(len(appended), len(commands) if reply else 0)
                if offsets:
                    await writer.send_offsets(offsets, self.ownership.consumer)
            self.stats["transactions"] += 1
            self.stats["commands"] += len(commands)
            self.meters.committed(tally)
            await self.content.destroy(appended)

    async def decide_and_send(self, owner: PartitionOwner, commands: list[dict[str, Any]], rings: dict, reply: bool,
                              batch: tracing.Untraced, tally: Tally) -> list[dict[str, Any]]:
        """Decide the commands in order, queueing their events (and replies); return the events (the commit confirms them)."""
        writer, s = owner.writer, self.settings
        appended = []
        now = self.clock()
        for command in commands:
            with batch.deciding(command) as deciding:
                outcome, envelopes = self.decide(owner.tenant(command["tenant_id"]), command, now,
                                                 rings.get(command["tenant_id"]))
                deciding.decided(outcome, envelopes)
            tally.decided(command, outcome)
            appended += envelopes
            key = command["tenant_id"].encode()
            for env in envelopes:
                await writer.send(s.events_topic, encode(env), key, owner.partition, cloudevents_headers(env))
            if reply:
                await writer.send(s.replies_topic, encode_json(outcome), key, owner.partition)
            self.stats["events"] += len(envelopes)
        return appended

    def decide(self, ledger: TenantLedger, command: dict[str, Any], now: datetime, ring=None) -> tuple[dict, list[dict]]:
        kind = self.undecidable.get(command["command_id"])
        return (ledger.refuse_undecidable(command, kind), []) if kind else ledger.execute(command, now, ring)
