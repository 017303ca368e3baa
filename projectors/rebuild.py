"""Rebuild a read model from offset 0 into a fresh generation, then swap it in atomically.

The live generation keeps serving queries and keeps being written by the running projector
until the swap; afterwards the running projector notices (SchemaSwapped) and continues in the
new generation from the position the rebuild stored, so nothing is skipped or applied twice.
"""
from typing import Callable

from infra.adapters.eventlog import EventLog, TopicPartition
from infra.adapters.eventlog.kafka import KafkaLog
from infra.adapters.settings import Settings
from projectors.admit import Admission
from projectors.base import Projection

BATCH = 5000
Progress = Callable[[int, int], None]  # (offsets done, offsets to do)


async def replay_into(settings: Settings, target: Projection, progress: Progress | None = None,
                      log_: EventLog | None = None) -> int:
    """Apply every committed event up to the current log end into target; return how many.

    Tenants are admitted as the live runner admits them: one whose event cannot be applied is held
    in the new generation too (the hold is derived from the log), and the rest are rebuilt.
    """
    log_ = log_ or KafkaLog(settings)
    reader = log_.reader()
    await reader.start()
    try:
        tps = [TopicPartition(settings.events_topic, p) for p in await log_.partitions(settings.events_topic)]
        ends = await reader.end_offsets(tps)
        total, finished, applied = sum(ends.values()), 0, 0
        admission = Admission(target, from_store=False)
        for tp in tps:
            records: list = []
            async for record in reader.read(tp, 0, ends[tp]):
                records.append(record)
                if len(records) >= BATCH:
                    applied += await admission.store([(tp.partition, records, record.offset + 1)])
                    records = []
                    if progress:
                        progress(finished + record.offset + 1, total)
            applied += await admission.store([(tp.partition, records, ends[tp])])
            finished += ends[tp]
            if progress:
                progress(finished, total)
        return applied
    finally:
        await reader.stop()


async def rebuild(settings: Settings, live: Projection, progress: Progress | None = None,
                  go_live: bool = True) -> tuple[Projection, int]:
    """Build the next generation of live's read model from the log; swap it in unless go_live is False."""
    target = await live.fresh_generation(await live.live_generation() + 1)
    applied = await replay_into(settings, target, progress)
    if go_live:
        await target.go_live()
    return target, applied
