"""One check per read model: where it stands in a tenant's chain, then its rows against the chain's.

Row-per-event models are checked against rows built from the chain itself (projectors/verification_expect.py):
audit (every column of every row, and every row re-hashes from the row alone: queries/discovery.py
`envelope_of`), evidence (a leaf per event, a row per checkpoint) and channels (every stored envelope
re-hashes and is the chain's event at its channel sequence, heads count every event, the run of each tool
call and approval). The derived models carry no hash: projectors/verification_shadow.py rebuilds them.
"""
import asyncio
import json
from abc import ABC, abstractmethod
from typing import AsyncIterator

from projectors.audit import COLUMNS as AUDIT_COLUMNS
from projectors.base import Projection
from projectors.ch import ClickHouseProjection
from projectors.verification import Diff, Live, ModelVerdict, Problem
from projectors.verification_chain import Chains, TenantChain
from projectors.verification_expect import (ChannelPlan, aggregate_runs_expected, audit_expected,
                                            channel_events_expected, channel_heads_expected,
                                            checkpoints_expected, leaves_expected, swept_runs)
from projectors.verification_stores import PAGE, Cut, PgSnapshot, ch_cut, pg_snapshot
from queries.discovery import envelope_of
from schemas.envelope import compute_hash


class Check(ABC):
    """Verify one read model, tenant by tenant, against the chains read for this verification."""

    def __init__(self, live: Projection, chains: Chains, partitions: int):
        self.live, self.chains, self.partitions = live, chains, partitions
        self.name = live.name

    @abstractmethod
    async def head(self, tenant_id: str) -> Cut:
        """Where the live model stands in the tenant's chain now."""

    @abstractmethod
    async def verify(self, chain: TenantChain, verdict: ModelVerdict) -> None:
        """Take one look at the live model and add what differs from the chain to verdict."""

    async def close(self) -> None:
        """Drop whatever the check built (a shadow generation)."""

    async def stand(self, cut: Cut, chain: TenantChain, verdict: ModelVerdict) -> TenantChain:
        """Record how far the model has applied the chain, reading more of the log if it is ahead of what was read."""
        if cut.applied > chain.size and chain.broken is None:
            await self.chains.extend()
        verdict.applied = cut.applied
        due = chain.applied_before(cut.position) if cut.position is not None else 0
        where = {"chain_seq": cut.applied + 1}
        if cut.held_at is not None:
            verdict.stopped_at = cut.held_at
            verdict.add(Problem(self.name, "held", {"chain_seq": cut.held_at}, "held",
                                detail="the model holds the tenant here: an event could not be applied "
                                       "(GET /v1/ops/projectors says why)"))
        elif cut.applied < due:
            verdict.stopped_at = cut.applied + 1
            verdict.add(Problem(self.name, "heads", where, "skipped",
                                detail=f"the model's position is past chain_seq {due}, but it applied the "
                                       f"tenant's chain only to {cut.applied}"))
        if cut.applied > chain.size:
            verdict.add(Problem(self.name, "heads", {"chain_seq": chain.size + 1}, "extra",
                                detail=f"the model has applied chain_seq {cut.applied}; the chain has {chain.size}"))
        return chain

    def envelopes(self, chain: TenantChain):
        return chain.envelopes(self.chains.topic)


class PgReads:
    """Where a PostgreSQL model stands, read in a snapshot of its own."""

    async def head(self, tenant_id: str) -> Cut:
        async with pg_snapshot(self.live.pool, self.live.prefix, self.name) as snap:
            return await snap.cut(tenant_id, self.partitions) if snap else Cut(0, None, None)


class ChReads:
    """Where a ClickHouse model stands: its live database's progress."""

    async def db(self) -> str | None:
        live = await self.live.generations.live(self.name)
        return live[0] if live else None

    async def head(self, tenant_id: str) -> Cut:
        db = await self.db()
        if db is None:
            return Cut(0, None, None)
        return await asyncio.to_thread(ch_cut, self.live.ch, db, tenant_id, self.partitions)

    async def cut(self, tenant_id: str) -> tuple[str, Cut]:
        db = await self.db()
        return db, await asyncio.to_thread(ch_cut, self.live.ch, db, tenant_id, self.partitions)


class PgCheck(PgReads, Check):
    async def verify(self, chain: TenantChain, verdict: ModelVerdict) -> None:
        async with pg_snapshot(self.live.pool, self.live.prefix, self.name) as snap:
            cut = await snap.cut(chain.tenant_id, self.partitions)
            await self.compare(snap, await self.stand(cut, chain, verdict), cut.applied, verdict)

    @abstractmethod
    async def compare(self, snap: PgSnapshot, chain: TenantChain, applied: int, verdict: ModelVerdict) -> None:
        """Compare the snapshot's rows of the tenant with what the chain says."""


class EvidenceCheck(PgCheck):
    async def compare(self, snap: PgSnapshot, chain: TenantChain, applied: int, verdict: ModelVerdict) -> None:
        t = (chain.tenant_id,)
        leaves = snap.rows("SELECT chain_seq, hash FROM {s}.leaves WHERE tenant_id = %s ORDER BY chain_seq", t)
        await Diff(verdict, "leaves", ("chain_seq",), ("hash",)).run(
            leaves_expected(self.envelopes(chain), applied), (Live((seq,), (bytes(h),)) async for seq, h in leaves))
        columns = ("origin", "size", "root", "note", "key", "recorded_at")
        checkpoints = snap.rows(f"SELECT chain_seq, {', '.join(columns)} FROM {{s}}.checkpoints WHERE tenant_id = %s "
                                "ORDER BY chain_seq", t)
        await Diff(verdict, "checkpoints", ("chain_seq",), columns).run(
            checkpoints_expected(self.envelopes(chain), applied),
            (Live((r[0],), (*r[1:3], bytes(r[3]), *r[4:])) async for r in checkpoints))


class ChannelsCheck(PgCheck):
    retain = 100_000  # RUNLEDGER_SSE_RETAIN of the deployment (set by the job)

    async def compare(self, snap: PgSnapshot, chain: TenantChain, applied: int, verdict: ModelVerdict) -> None:
        t = chain.tenant_id
        swept = swept_runs(self.name, self.envelopes(chain), applied)
        plan = ChannelPlan(applied, swept).count(self.envelopes(chain))
        heads = {c: (seq, oldest) async for c, seq, oldest in snap.rows(
            'SELECT channel, seq, oldest FROM {s}.channel_heads WHERE tenant_id = %s '
            'ORDER BY channel COLLATE "C"', (t,))}
        trimmed = plan.trimmed_below({c: oldest for c, (_, oldest) in heads.items()}, self.retain)
        events = snap.rows('SELECT chain_seq, channel, seq, type, envelope FROM {s}.channel_events '
                           'WHERE tenant_id = %s '
                           'ORDER BY chain_seq, channel COLLATE "C"', (t,))
        await Diff(verdict, "channel_events", ("chain_seq", "channel"), ("seq", "type", "hash", "envelope")).run(
            channel_events_expected(self.envelopes(chain), plan, trimmed), (stored(t, row) async for row in events))
        await Diff(verdict, "channel_heads", ("channel",), ("seq",)).run(
            channel_heads_expected(plan), [Live((c,), (seq,)) for c, (seq, _) in heads.items()])
        runs = snap.rows('SELECT aggregate_id, run_id FROM {s}.aggregate_runs WHERE tenant_id = %s '
                         'ORDER BY aggregate_id COLLATE "C"', (t,))
        await Diff(verdict, "aggregate_runs", ("aggregate_id",), ("run_id",)).run(
            aggregate_runs_expected(self.envelopes(chain), applied, swept), (Live((a,), (r,)) async for a, r in runs))


def stored(tenant_id: str, row: tuple) -> Live:
    """A channel row as (seq, type, the envelope's hash, whether the envelope re-hashes and is its row's event)."""
    chain_seq, channel, seq, kind, envelope = row
    sound = (isinstance(envelope, dict) and compute_hash(envelope) == envelope.get("hash")
             and (envelope.get("tenant_id"), envelope.get("chain_seq"), envelope.get("type"))
             == (tenant_id, chain_seq, kind))
    hash_ = envelope.get("hash") if isinstance(envelope, dict) else None
    return Live((chain_seq, channel), (seq, kind, hash_, sound),
                "" if sound else "the stored envelope does not re-hash or is not this row's event")


class AuditCheck(ChReads, Check):
    live: ClickHouseProjection

    async def verify(self, chain: TenantChain, verdict: ModelVerdict) -> None:
        db, cut = await self.cut(chain.tenant_id)
        chain = await self.stand(cut, chain, verdict)
        swept = swept_runs(self.name, self.envelopes(chain), cut.applied)
        await Diff(verdict, "events", ("chain_seq",), tuple(AUDIT_COLUMNS)).run(
            audit_expected(self.envelopes(chain), cut.applied, swept), self.rows(db, chain.tenant_id))

    async def rows(self, db: str, tenant_id: str) -> AsyncIterator[Live]:
        after = 0
        while True:
            page = await asyncio.to_thread(
                self.live.ch.query, f"SELECT {', '.join(AUDIT_COLUMNS)} FROM {db}.events FINAL WHERE tenant_id = "
                                    "{t:String} AND chain_seq > {after:UInt64} ORDER BY chain_seq LIMIT {n:UInt32}",
                {"t": tenant_id, "after": after, "n": PAGE})
            for row in page:
                yield audit_live(tenant_id, row)
            if len(page) < PAGE:
                return
            after = page[-1]["chain_seq"]


def audit_live(tenant_id: str, row: dict) -> Live:
    """An audit row as the projector's tuple, flawed if the envelope it records does not re-hash to its hash."""
    try:
        sound = compute_hash(envelope_of(tenant_id, {**row, "payload": json.loads(row["payload"])})) == row["hash"]
    except (ValueError, TypeError):
        sound = False
    return Live((row["chain_seq"],), tuple(row[c] for c in AUDIT_COLUMNS),
                "" if sound else "the row does not re-hash to its hash: it was changed after it was written")
