"""Read a tenant's chain from the event log and verify it, as an outside auditor would."""
from tqdm import tqdm

from infra.adapters.eventlog import EventLog, TopicPartition
from infra.adapters.eventlog.kafka import KafkaLog
from infra.adapters.kafka import partition_for
from infra.adapters.settings import Settings
from schemas.chain import ChainVerdict, ChainVerifier
from schemas.envelope import decode


async def tenant_envelopes(settings: Settings, tenant_id: str, progress: bool = False, log_: EventLog | None = None):
    """Yield the tenant's committed envelopes in log order (from Kafka unless another log is given)."""
    async for _, env in tenant_records(settings, tenant_id, progress, log_):
        yield env


async def tenant_records(settings: Settings, tenant_id: str, progress: bool = False, log_: EventLog | None = None,
                         start: int = 0):
    """Yield (log offset, envelope) of the tenant's committed records from offset `start`, in log order."""
    log_ = log_ or KafkaLog(settings)
    partitions = await log_.partitions(settings.events_topic)
    if not partitions:
        raise LookupError(f"topic {settings.events_topic!r} does not exist on "
                          f"{settings.kafka_bootstrap}; check RUNLEDGER_TOPIC_PREFIX")
    tp = TopicPartition(settings.events_topic, partition_for(tenant_id, len(partitions)))
    reader = log_.reader()
    await reader.start()
    try:
        end = (await reader.end_offsets([tp]))[tp]
        key = tenant_id.encode()
        with tqdm(total=end, initial=start, unit="rec", disable=not progress,
                  desc=f"reading {tp.topic}[{tp.partition}]") as bar:
            async for record in reader.read(tp, start, end):
                bar.update(record.offset + 1 - bar.n)
                if record.key == key:
                    yield record.offset, decode(record.value)
    finally:
        await reader.stop()


async def verify_tenant(settings: Settings, tenant_id: str, progress: bool = False,
                        log_: EventLog | None = None) -> ChainVerdict:
    verifier = ChainVerifier(tenant_id)
    async for env in tenant_envelopes(settings, tenant_id, progress, log_):
        if failed := verifier.feed(env):
            return failed
    return verifier.verdict()
