"""One tenant's poison cannot stall another: tenants A and B share a partition; an event of A that the
read models cannot store holds A in each of them, B carries on in every one, and after the fix A alone
is replayed from the log and catches up, with nothing lost or doubled."""
import asyncio
import json
from contextlib import asynccontextmanager

from commands.processor import CommandProcessor
from infra.adapters.postgres import open_pool
from projectors.approvals import ApprovalsProjection
from projectors.channels import ChannelsProjection
from projectors.rebuild import rebuild
from projectors.runner import ProjectorRunner
from projectors.runs import RunsProjection
from queries.lag import held_report, projector_lag
from tests.integration.test_projectors import append_behind, dump, send_all
from tests.support import command, make_settings, unique, wait_until

TABLES = {"runs": ("runs", "steps", "tool_calls"), "approvals": ("approvals", "approval_votes"),
          "channels": ("channel_events", "channel_heads")}
POSTGRES = (RunsProjection, ApprovalsProjection, ChannelsProjection)


def without_nul(value):
    """What a fixed release would store for text PostgreSQL cannot hold (the test's stand-in for the fix)."""
    return json.loads(json.dumps(value).replace("\\u0000", "\\ufffd"))


class FixedRuns(RunsProjection):
    async def write(self, conn, envelopes):
        await super().write(conn, [without_nul(e) for e in envelopes])


class FixedChannels(ChannelsProjection):
    async def write(self, conn, envelopes):
        await super().write(conn, [without_nul(e) for e in envelopes])


FIXED = {"runs": FixedRuns, "channels": FixedChannels, "approvals": ApprovalsProjection}


@asynccontextmanager
async def running(settings, pool):
    """The processor and the three Postgres projectors, each runner swappable for a fixed release."""
    stop = asyncio.Event()
    projections = [await cls(pool, settings.topic_prefix).open() for cls in POSTGRES]
    runners = {p.name: ProjectorRunner(settings, p) for p in projections}
    tasks = [asyncio.create_task(CommandProcessor(settings).run(stop))]
    tasks += [asyncio.create_task(r.run(stop)) for r in runners.values()]
    try:
        yield runners
    finally:
        stop.set()
        await asyncio.gather(*tasks)


def lifecycle(tenant: str, run_id: str) -> list[dict]:
    return [command(tenant, {"type": "RequestRun", "run_id": run_id, "agent_id": "bot"}),
            command(tenant, {"type": "StartRun", "run_id": run_id}),
            command(tenant, {"type": "RequestApproval", "run_id": run_id, "action": "deploy", "risk_tier": "high"})]


async def poison_after(settings, tenant: str, run_id: str) -> dict:
    """Append to A's chain, behind the processor's back, a FailRun whose error holds a NUL (the intake refuses it)."""
    return await append_behind(settings, tenant, event_id="01a20000-0000-7000-8000-00000000dead", type="run.failed",
                               aggregate_id=run_id, aggregate_type="run", aggregate_version=3,
                               payload={"error": "before\u0000after"})


async def rows_of(pool, projection, tenant: str) -> dict[str, list]:
    return {table: [r for r in await dump(pool, projection.schema, table) if r[0] == tenant]
            for table in TABLES[projection.name]}


async def test_a_poison_event_holds_its_tenant_in_each_read_model_while_the_other_tenant_carries_on():
    settings = make_settings(partitions=1)
    pool = await open_pool(settings)
    a, b = unique("tenant-a"), unique("tenant-b")
    run_a, run_b, later_b = "018f0000-0000-7000-8000-00000000000a", "018f0000-0000-7000-8000-00000000000b", \
        "018f0000-0000-7000-8000-0000000000bb"
    try:
        async with running(settings, pool) as runners:
            projections = [r.projection for r in runners.values()]
            # Given A and B on the one partition, both applied everywhere
            await send_all(settings, lifecycle(a, run_a) + lifecycle(b, run_b))
            await wait_until(lambda: all_applied(projections, {a: 4, b: 4}), 60, "both tenants applied")
            # When A's next event is one no Postgres read model can store, and B keeps sending commands
            poison = await poison_after(settings, a, run_a)
            await send_all(settings, lifecycle(b, later_b))
            # Then B's new events reach every read model, and A is held in runs and channels at the poison
            await wait_until(lambda: all_applied(projections, {b: 8}), 60, "B's later commands applied everywhere")
            holds = {p.name: await p.holds() for p in projections}
            assert {name: [(h.tenant_id, h.chain_seq) for h in hs.values()] for name, hs in holds.items()} == \
                {"runs": [(a, 5)], "channels": [(a, 5)], "approvals": []}
            assert "read model cannot store this run.failed event" in holds["runs"][a].reason
            assert [r.failed for r in runners.values()] == [None, None, None]
            report = await projector_lag(settings, projections)
            assert [(r.projector, r.lag_events, r.status, r.held_tenants) for r in report] == \
                [("runs", 0, "OK", 1), ("approvals", 0, "OK", 0), ("channels", 0, "OK", 1)]
            assert [(h["projector"], h["tenant_id"], h["chain_seq"]) for h in await held_report(projections)] == \
                [("runs", a, 5), ("channels", a, 5)]
            # A's rows stop before the poison; the approvals model, which ignores run.failed, is not held
            assert [r[4] for r in (await rows_of(pool, runners["runs"].projection, a))["runs"]] == ["waiting_for_approval"]
            assert await runners["approvals"].projection.head(a) == (poison["chain_seq"], poison["hash"])

            # When the fixed release runs and ops resume A in every read model that holds it
            for name in ("runs", "channels"):
                fixed = await FIXED[name](pool, settings.topic_prefix).open()
                runners[name].projection = fixed
                assert await fixed.request_resume(a) is True
            assert await runners["approvals"].projection.request_resume(a) is False
            # Then A catches up alone, nothing is held, and every model equals a fresh rebuild by the fixed release
            await wait_until(lambda: nothing_held(projections), 60, "A resumed everywhere")
            await wait_until(lambda: all_applied([r.projection for r in runners.values()], {a: 5, b: 8}), 30, "A caught up")
            assert [r[4] for r in (await rows_of(pool, runners["runs"].projection, a))["runs"]] == ["failed"]
            for name, runner in runners.items():
                fresh, _ = await rebuild(settings, await FIXED[name](pool, settings.topic_prefix).open(), go_live=False)
                for table in TABLES[name]:
                    assert await dump(pool, runner.projection.schema, table) == await dump(pool, fresh.schema, table), \
                        f"{name}.{table} after the resume differs from a fresh rebuild"
    finally:
        await pool.close()


async def test_a_rebuild_holds_the_same_tenant_and_rebuilds_every_other():
    settings = make_settings(partitions=1)
    pool = await open_pool(settings)
    a, b = unique("tenant-a"), unique("tenant-b")
    run_a, run_b = "018f0000-0000-7000-8000-00000000001a", "018f0000-0000-7000-8000-00000000001b"
    try:
        async with running(settings, pool) as runners:
            await send_all(settings, lifecycle(a, run_a) + lifecycle(b, run_b))
            await poison_after(settings, a, run_a)
            runs = runners["runs"].projection
            await wait_until(lambda: held_in(runs, a), 60, "A held in the live runs model")
            rebuilt, _ = await rebuild(settings, runs, go_live=False)
            assert [(h.tenant_id, h.chain_seq) for h in (await rebuilt.holds()).values()] == [(a, 5)]
            assert await dump(pool, rebuilt.schema, "runs") == await dump(pool, runs.schema, "runs")
    finally:
        await pool.close()


async def all_applied(projections, seqs: dict[str, int]) -> bool:
    """Whether every projection has applied each tenant's chain at least up to its chain_seq."""
    heads = [(await p.head(tenant))[0] >= seq for p in projections for tenant, seq in seqs.items()]
    return all(heads)


async def nothing_held(projections) -> bool:
    return not [await p.holds() for p in projections if await p.holds()]


async def held_in(projection, tenant: str) -> bool:
    return tenant in await projection.holds()
