"""Read a tenant's chain from Kafka and verify it, as an outside auditor would."""
from aiokafka import TopicPartition
from tqdm import tqdm

from infra.adapters import kafka
from infra.adapters.settings import Settings
from schemas.chain import ChainVerdict, ChainVerifier
from schemas.envelope import decode


async def tenant_envelopes(settings: Settings, tenant_id: str, progress: bool = False):
    """Yield the tenant's committed envelopes in log order."""
    consumer = kafka.reader(settings)
    await consumer.start()
    try:
        partitions = await kafka.partitions_of(settings, settings.events_topic)
        if not partitions:
            raise LookupError(f"topic {settings.events_topic!r} does not exist on "
                              f"{settings.kafka_bootstrap}; check RUNLEDGER_TOPIC_PREFIX")
        tp = TopicPartition(settings.events_topic, kafka.partition_for(tenant_id, len(partitions)))
        consumer.assign([tp])
        end = (await consumer.end_offsets([tp]))[tp]
        key = tenant_id.encode()
        with tqdm(total=end, unit="rec", disable=not progress, desc=f"reading {tp.topic}[{tp.partition}]") as bar:
            async for record in kafka.read_partition(consumer, tp):
                bar.update(record.offset + 1 - bar.n)
                if record.key == key:
                    yield decode(record.value)
    finally:
        await consumer.stop()


async def verify_tenant(settings: Settings, tenant_id: str, progress: bool = False) -> ChainVerdict:
    verifier = ChainVerifier(tenant_id)
    async for env in tenant_envelopes(settings, tenant_id, progress):
        if failed := verifier.feed(env):
            return failed
    return verifier.verdict()
