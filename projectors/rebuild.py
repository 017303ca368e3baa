"""Rebuild a read model from offset 0 into a fresh generation, then swap it in atomically.

The live generation keeps serving queries and keeps being written by the running projector
until the swap; afterwards the running projector notices (SchemaSwapped) and continues in the
new generation from the position the rebuild stored, so nothing is skipped or applied twice.
"""
from aiokafka import TopicPartition
from tqdm import tqdm

from infra import kafka
from infra.settings import Settings
from projectors.pg import PostgresProjection, schema_name
from projectors.runner import ProjectionHalted, readable_problem
from schemas.chain import ChainVerifier
from schemas.envelope import decode

BATCH = 5000


async def replay_into(settings: Settings, target: PostgresProjection, progress: bool = False) -> int:
    """Apply every committed event up to the current log end into target; return how many."""
    reader = kafka.reader(settings)
    await reader.start()
    try:
        tps = [TopicPartition(settings.events_topic, p)
               for p in sorted(await kafka.partitions_of(settings, settings.events_topic))]
        reader.assign(tps)
        ends = await reader.end_offsets(tps)
        heads: dict[str, ChainVerifier] = {}
        applied = 0
        with tqdm(total=sum(ends.values()), unit="ev", disable=not progress,
                  desc=f"rebuilding {target.name} into {target.schema}") as bar:
            for tp in tps:
                batch: list[dict] = []
                done = 0
                async for record in kafka.read_partition(reader, tp):
                    batch.append(verified(decode(record.value), heads))
                    if len(batch) >= BATCH:
                        await target.apply(tp.partition, batch, record.offset + 1)
                        applied += len(batch)
                        bar.update(record.offset + 1 - done)
                        done, batch = record.offset + 1, []
                await target.apply(tp.partition, batch, ends[tp])
                applied += len(batch)
                bar.update(ends[tp] - done)
        return applied
    finally:
        await reader.stop()


def verified(env: dict, heads: dict[str, ChainVerifier]) -> dict:
    tenant = env["tenant_id"]
    verifier = heads.setdefault(tenant, ChainVerifier(tenant))
    problem = readable_problem(env) or verifier.problem_with(env)
    if problem:
        raise ProjectionHalted(f"tenant {tenant} chain_seq {verifier.head_seq + 1}: {problem}")
    verifier.accept(env)
    return env


async def next_generation(live: PostgresProjection) -> int:
    async with live.pool.connection() as conn:
        _, generation = await live.live(conn, lock="")
    return generation + 1


async def fresh(cls: type[PostgresProjection], pool, prefix: str, generation: int) -> PostgresProjection:
    async with pool.connection() as conn:
        await conn.execute(f"DROP SCHEMA IF EXISTS {schema_name(prefix, cls.name, generation)} CASCADE")
    return await cls(pool, prefix, generation).open()


async def swap(target: PostgresProjection, generation: int) -> None:
    async with target.pool.connection() as conn, conn.transaction():
        await target.live(conn, lock="FOR UPDATE")
        await conn.execute("UPDATE public.runledger_projections SET active_schema = %s, generation = %s, "
                           "swapped_at = now() WHERE name = %s", (target.schema, generation, target.registry_key))


async def rebuild(settings: Settings, cls: type[PostgresProjection], pool, progress: bool = False,
                  go_live: bool = True) -> tuple[str, int]:
    """Build the next generation from the log; swap it in unless go_live is False. Return (schema, events)."""
    live = await cls(pool, settings.topic_prefix).open()
    generation = await next_generation(live)
    target = await fresh(cls, pool, settings.topic_prefix, generation)
    applied = await replay_into(settings, target, progress)
    if go_live:
        await swap(target, generation)
    return target.schema, applied
