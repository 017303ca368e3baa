"""Derived read models (runs, approvals, governance, cost) checked by rebuilding them beside the live one.

They carry no hash, so the chain cannot say row by row what they hold; their projector can. A shadow
generation (projectors/generations.py, generation 0: live generations count from 1, so it is never
live and never a rebuild's target) is fed each tenant's records up to the head the live generation
has applied, through the same admission as a rebuild (projectors/rebuild.py), and then every table
of the model's own is compared with the live one row by row on its primary (sorting) key.

Left out, because they legitimately differ between two generations fed the same events:
`positions`/`progress` (partition offsets and the clock time of each poll; a shadow stores none),
`heads` (the head is what both are cut at), `status` (the live process's last failure) and `held`
(compared apart: a live hold is reported as such), and ClickHouse's `*_probe` (Null engine) twins.
Every other table and column is compared, `removals` included (what each sweep removed).
"""
import asyncio

from projectors.admit import Admission
from projectors.base import Projection
from projectors.verification import Diff, Expected, Live, ModelVerdict, Problem, each
from projectors.verification_chain import Chains, TenantChain
from projectors.verification_checks import Check, ChReads, PgReads
from projectors.verification_stores import Table, ch_rows, ch_tables, pg_rows, pg_snapshot, pg_tables

SHADOW = 0
FEED = 5000


class ShadowCheck(Check):
    def __init__(self, live: Projection, chains: Chains, partitions: int):
        super().__init__(live, chains, partitions)
        self.shadow: Projection | None = None
        self.admission: Admission | None = None
        self.fed: dict[str, int] = {}  # tenant → records fed to the shadow

    async def open(self) -> None:
        if self.shadow is None:
            self.shadow = await self.live.fresh_generation(SHADOW)
            self.admission = Admission(self.shadow, from_store=False)

    async def close(self) -> None:
        if self.shadow is not None:
            await self.live.generations.drop(self.name, SHADOW)
            self.shadow = None

    async def feed(self, chain: TenantChain, upto: int) -> None:
        """Apply the tenant's records up to the `upto`th to the shadow, in polls of FEED."""
        start, batch = self.fed.get(chain.tenant_id, 0), []
        for index, record in enumerate(chain.replay(self.chains.topic)):
            if index >= upto:
                break
            if index >= start:
                batch.append(record)
            if len(batch) == FEED:
                await self.admission.store([(chain.partition, batch, None)])
                batch = []
        if batch:
            await self.admission.store([(chain.partition, batch, None)])
        self.fed[chain.tenant_id] = max(start, upto)


class PgShadowCheck(PgReads, ShadowCheck):
    async def verify(self, chain: TenantChain, verdict: ModelVerdict) -> None:
        await self.open()
        async with self.live.pool.connection() as conn:  # the shadow's tables exist before the snapshot begins
            shadow = await pg_tables(conn, self.shadow.schema)
        async with pg_snapshot(self.live.pool, self.live.prefix, self.name) as snap:
            cut = await snap.cut(chain.tenant_id, self.partitions)
            chain = await self.stand(cut, chain, verdict)
            await self.feed(chain, cut.applied)
            live = await pg_tables(snap.conn, snap.schema)
            for table in shadow.values():
                if fits(self.name, table, live, verdict):
                    sql = (f"SELECT {', '.join(table.columns)} FROM {{s}}.{table.name} WHERE tenant_id = %s "
                           f"ORDER BY {table.order('C')}")
                    params = (chain.tenant_id,)
                    await Diff(verdict, table.name, table.key, table.columns).run(
                        expected(table, pg_rows(self.live.pool, self.shadow.schema, sql, params)),
                        found(table, snap.rows(sql, params)))


class ChShadowCheck(ChReads, ShadowCheck):
    async def verify(self, chain: TenantChain, verdict: ModelVerdict) -> None:
        await self.open()
        ch, t = self.live.ch, chain.tenant_id
        db, cut = await self.cut(t)
        chain = await self.stand(cut, chain, verdict)
        await self.feed(chain, cut.applied)
        shadow = await asyncio.to_thread(ch_tables, ch, self.shadow.db)
        live = await asyncio.to_thread(ch_tables, ch, db)
        for table in shadow.values():
            if fits(self.name, table, live, verdict):
                rebuilt = await asyncio.to_thread(ch_rows, ch, self.shadow.db, table, t, cut.applied)
                rows = await asyncio.to_thread(ch_rows, ch, db, table, t, cut.applied)
                await Diff(verdict, table.name, table.key, table.columns).run(expected(table, rebuilt),
                                                                             found(table, rows))


def fits(model: str, table: Table, live: dict[str, Table], verdict: ModelVerdict) -> bool:
    """Whether the live generation has the table with every column the shadow has; a schema problem if not."""
    have = live.get(table.name)
    lacking = tuple(c for c in table.columns if have is None or c not in have.columns)
    if lacking:
        verdict.add(Problem(model, table.name, {"table": table.name}, "schema", lacking,
                            "the live generation lacks this table" if have is None else
                            f"the live generation lacks the columns {', '.join(lacking)}"))
    return not lacking


async def expected(table: Table, rows):
    async for row in each(rows):
        yield Expected(table.key_of(row), row)


async def found(table: Table, rows):
    async for row in each(rows):
        yield Live(table.key_of(row), row)
