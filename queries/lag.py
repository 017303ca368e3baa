"""Projector lag per partition: events behind the log end, seconds behind, and a Burrow-like status.

lag_events = log end offset (read_committed) − the projector's stored position;
lag_seconds = now − recorded_at of the last applied event (0 when caught up);
status: FAILED (the projector stopped and said why), STALLED (behind and no progress for
`stall_after_s`), LAGGING (behind by more than `lagging_after_s`), else OK. `held_tenants` counts
the tenants of the partition held in that read model (projectors/admit.py); the others go on, so
a hold does not change the partition's lag or status. held_report() says which, where and why.
"""
from dataclasses import asdict, dataclass
from datetime import datetime, timezone

from infra.adapters.eventlog import EventLog, TopicPartition
from infra.adapters.eventlog.kafka import KafkaLog
from infra.adapters.settings import Settings
from projectors.base import Hold, Projection
from projectors.generations import Generational
from schemas.envelope import parse_iso


@dataclass(frozen=True)
class PartitionLag:
    projector: str
    partition: int
    position: int
    end_offset: int
    lag_events: int
    lag_seconds: float
    status: str
    held_tenants: int = 0


def status_of(failed: bool, lag_events: int, lag_seconds: float, idle_s: float | None,
              stall_after_s: float, lagging_after_s: float) -> str:
    if failed:
        return "FAILED"
    if lag_events > 0 and idle_s is not None and idle_s > stall_after_s:
        return "STALLED"
    if lag_events > 0 and (idle_s is None or lag_seconds > lagging_after_s):
        return "LAGGING"
    return "OK"


async def end_offsets(settings: Settings, log_: EventLog | None = None) -> dict[int, int]:
    """Each events partition's last stable offset (the end a read_committed projector can reach)."""
    log_ = log_ or KafkaLog(settings)
    tps = [TopicPartition(settings.events_topic, p) for p in await log_.partitions(settings.events_topic)]
    if not tps:
        return {}
    reader = log_.reader()
    await reader.start()
    try:
        return {tp.partition: offset for tp, offset in (await reader.end_offsets(tps)).items()}
    finally:
        await reader.stop()


Holds = dict[str, dict[str, Hold]]  # projector → tenant → its hold


async def following(projections: list[Projection]) -> None:
    """Bind each read model to its live generation before reading it (projectors/generations.py `follow`)."""
    for projection in projections:
        if isinstance(projection, Generational):
            await projection.follow()


async def holds_of(projections: list[Projection]) -> Holds:
    await following(projections)
    return {p.name: await p.holds() for p in projections}


async def projector_lag(settings: Settings, projections: list[Projection], stall_after_s: float = 30,
                        lagging_after_s: float = 5, holds: Holds | None = None,
                        log_: EventLog | None = None) -> list[PartitionLag]:
    """`log_`: the event log to measure against (by default Kafka's, from settings)."""
    ends = await end_offsets(settings, log_)
    await following(projections)
    holds = holds if holds is not None else await holds_of(projections)
    now = datetime.now(timezone.utc)
    report = []
    for projection in projections:
        positions, failed = await projection.positions(), await projection.failure() is not None
        held = [h.partition for h in holds[projection.name].values()]
        for partition, end in sorted(ends.items()):
            pos = positions.get(partition)
            position = pos.next_offset if pos else 0
            behind = max(0, end - position)
            last = parse_iso(pos.last_recorded_at) if pos and pos.last_recorded_at else None
            seconds = (now - last).total_seconds() if behind and last else 0.0
            idle = (now - pos.updated_at).total_seconds() if pos and pos.updated_at else None
            report.append(PartitionLag(projection.name, partition, position, end, behind, round(seconds, 3),
                                       status_of(failed, behind, seconds, idle, stall_after_s, lagging_after_s),
                                       held.count(partition)))
    return report


async def held_report(projections: list[Projection], holds: Holds | None = None) -> list[dict]:
    """Every held tenant of every read model: where it stopped, since when, why, and whether a resume is asked."""
    holds = holds if holds is not None else await holds_of(projections)
    return [{"projector": p.name, "tenant_id": h.tenant_id, "partition": h.partition, "offset": h.offset,
             "chain_seq": h.chain_seq, "held_at": h.held_at.isoformat() if h.held_at else None,
             "resume_requested": h.resume_requested, "reason": h.reason}
            for p in projections for h in sorted(holds[p.name].values(), key=lambda h: h.tenant_id)]


def as_dicts(report: list[PartitionLag]) -> list[dict]:
    return [asdict(r) for r in report]
