"""Projectors on the real broker and database: rebuild equals incremental, kill -9 changes nothing,
a broken chain or a record that is not an envelope holds its tenant loudly (and no other)."""
import asyncio
import json
from collections import Counter
from contextlib import asynccontextmanager

import pytest
from aiokafka import AIOKafkaProducer

from infra.adapters.http.auth import Principal
from commands.intake import command_envelope
from commands.processor import CommandProcessor
from infra.health.legacy import health
from domain.registry import EVENT_CLASSES, schema_version_of
from infra.adapters.postgres import open_pool
from bench.lib.workload import workload
from projectors.approvals import ApprovalsProjection
from projectors.rebuild import rebuild
from projectors.runner import ProjectorRunner
from projectors.runs import RunsProjection
from queries.lag import projector_lag
from schemas.envelope import encode, seal
from tests.support import Service, events, make_settings, produce_commands, read_topic, replies, unique, wait_until

TABLES = {RunsProjection: ("runs", "steps", "tool_calls"), ApprovalsProjection: ("approvals", "approval_votes")}
ROW_PER = {"runs": "run.requested", "steps": "run.step_started", "tool_calls": "tool_call.requested",
           "approvals": "approval.requested", "approval_votes": "approval.vote_recorded"}  # the event that adds a row


def envelopes_for(steps) -> list[dict]:
    return [command_envelope(Principal(s.tenant, s.subject, s.roles), json.dumps(s.body).encode(), None, None, None)
            for s in steps]


async def dump(pool, schema: str, table: str) -> list[tuple]:
    async with pool.connection() as conn:
        rows = await (await conn.execute(f"SELECT * FROM {schema}.{table}")).fetchall()
    return sorted(rows, key=repr)


async def caught_up(settings, projections) -> bool:
    report = await projector_lag(settings, projections)
    return all(r.lag_events == 0 for r in report)


@asynccontextmanager
async def in_process(settings, pool, with_projectors=True):
    stop = asyncio.Event()
    processor = CommandProcessor(settings)
    projections = [await RunsProjection(pool, settings.topic_prefix).open(),
                   await ApprovalsProjection(pool, settings.topic_prefix).open()]
    runners = [ProjectorRunner(settings, p) for p in projections] if with_projectors else []
    tasks = [asyncio.create_task(processor.run(stop))] + [asyncio.create_task(r.run(stop)) for r in runners]
    try:
        yield projections, runners
    finally:
        stop.set()
        await asyncio.gather(*tasks)


async def send_all(settings, commands) -> None:
    await produce_commands(settings, commands)
    ids = {c["command_id"] for c in commands}

    async def answered():
        got = await replies(settings)
        missing = ids - set(got)
        assert not [r for r in got.values() if r["command_id"] in ids and r["status"] != "accepted"]
        return not missing
    await wait_until(answered, 120, f"{len(ids)} replies")


async def assert_equal_to_fresh_rebuild(settings, pool, projections):
    """Each table equals a fresh rebuild's and has one row per event of the log that adds one (and some)."""
    on_log = Counter(e["type"] for e in await events(settings))
    for projection in projections:
        rebuilt_model, _ = await rebuild(settings, projection, go_live=False)
        schema = rebuilt_model.schema
        for table in TABLES[type(projection)]:
            live = await dump(pool, projection.schema, table)
            rebuilt = await dump(pool, schema, table)
            assert live == rebuilt, f"{projection.name}.{table} differs from a fresh rebuild"
            expected = on_log[ROW_PER[table]]
            assert (len(live), expected > 0) == (expected, True), \
                f"{projection.name}.{table} has {len(live)} rows for {expected} {ROW_PER[table]} events on the log"


async def test_a_rebuilt_read_model_is_identical_and_swaps_in_while_serving():
    settings = make_settings()
    pool = await open_pool(settings)
    steps = workload([unique("tenant-") for _ in range(5)], runs_per_tenant=40, seed=11)
    try:
        async with in_process(settings, pool) as (projections, _):
            await send_all(settings, envelopes_for(steps))
            await wait_until(lambda: caught_up(settings, projections), 120, "projectors to catch up")
            assert len(await events(settings)) > 3000
            await assert_equal_to_fresh_rebuild(settings, pool, projections)
            runs = projections[0]
            before = await dump(pool, runs.schema, "runs")
            rebuilt_model, count = await rebuild(settings, runs)
            schema = rebuilt_model.schema
            assert count == len(await events(settings)) and schema != runs.schema
            extra = workload([unique("tenant-")], runs_per_tenant=3, seed=12)
            await send_all(settings, envelopes_for(extra))
            swapped = await RunsProjection(pool, settings.topic_prefix).open()
            assert swapped.schema == schema
            await wait_until(lambda: caught_up(settings, [swapped]), 60,
                             "the runs projector to continue in the new generation")
            after = await dump(pool, schema, "runs")
            assert all(row in after for row in before) and len(after) == len(before) + 3
    finally:
        await pool.close()


Positions = dict[tuple[str, int], int]  # (projector, partition) → stored next offset


def mid_batch(names, positions: Positions, ends: dict[int, int], resumed_from: Positions) -> bool:
    """Whether each projector named has stored a batch since it resumed from `resumed_from`, and has events left."""
    def at(name: str, p: int, where: Positions) -> int:
        return where.get((name, p), 0)
    return bool(ends) and all(
        any(at(name, p, positions) > at(name, p, resumed_from) for p in ends)
        and any(end > at(name, p, positions) for p, end in ends.items()) for name in names)


async def test_kill_9_mid_batch_never_loses_or_doubles_an_effect():
    import itertools
    from tests.support import end_offsets
    settings = make_settings(partitions=2)
    pool = await open_pool(settings)
    # Waves of commands back to back, so that events keep arriving while the projector works
    waves = (envelopes_for(workload([unique("tenant-") for _ in range(6 if n == 0 else 2)],
                                    runs_per_tenant=25 if n == 0 else 10, seed=13 + n)) for n in itertools.count())
    try:
        async with in_process(settings, pool, with_projectors=False) as (projections, _):
            names = [p.name for p in projections]

            async def positions() -> Positions:
                return {(p.name, partition): pos.next_offset for p in projections
                        for partition, pos in (await p.positions()).items()}

            async def applied_a_batch_with_events_left():
                nonlocal sender
                if sender.done():
                    await sender
                    sender = asyncio.create_task(send_all(settings, next(waves)))
                seen = await projector_lag(settings, projections)
                return mid_batch(names, {(r.projector, r.partition): r.position for r in seen},
                                 {r.partition: r.end_offset for r in seen}, resumed_from)

            projector = Service(settings, api=False, processor=False).start()
            sender = asyncio.create_task(send_all(settings, next(waves)))
            resumed_from: Positions = {}  # where the running projector's positions stood when it started
            kills, kills_mid_batch = 0, 0
            try:
                while kills_mid_batch < 3:
                    # Given a projector that has stored a batch since it started, with events left to apply
                    await wait_until(applied_a_batch_with_events_left, 120,
                                     "the projector to store a batch while events remain")
                    # When it is killed -9 there and then (frozen first, to read the log's end as it dies)
                    projector.pause()
                    ends = await end_offsets(settings, settings.events_topic)
                    projector.kill()
                    kills += 1
                    stored = await positions()
                    kills_mid_batch += mid_batch(names, stored, ends, resumed_from)  # so it was, as it died
                    resumed_from = stored
                    projector.start()
                    assert kills < 12, f"only {kills_mid_batch} of {kills} kills found the projector mid-batch"
                await sender
                await wait_until(lambda: caught_up(settings, projections), 120, "the projector to catch up")
            finally:
                projector.stop()
            # Then what it stored equals a fresh rebuild: no effect lost, none applied twice
            await assert_equal_to_fresh_rebuild(settings, pool, projections)
    finally:
        await pool.close()


async def produce_raw(settings, value: bytes, tenant: str):
    """Put a record on partition 0 of the events topic behind the processor's back."""
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
    await producer.start()
    try:
        return await producer.send_and_wait(settings.events_topic, value, key=tenant.encode(), partition=0)
    finally:
        await producer.stop()


async def append_behind(settings, tenant: str, **fields) -> dict:
    """Seal and put on the log the tenant's next event, behind the processor's back; fields override its head's."""
    head = [e for e in await events(settings) if e["tenant_id"] == tenant][-1]
    kind = EVENT_CLASSES.get(fields.get("type", head["type"]))  # the head's schema_version is its own type's
    env = seal({**head, "chain_seq": head["chain_seq"] + 1, "prev_hash": head["hash"],
                "aggregate_version": head["aggregate_version"] + 1,
                "schema_version": schema_version_of(kind) if kind else head["schema_version"], **fields})
    await produce_raw(settings, encode(env), tenant)
    return env


async def test_a_broken_chain_holds_its_tenant_and_lag_and_health_name_it():
    settings = make_settings(partitions=1)
    pool = await open_pool(settings)
    tenant = unique("tenant-")
    try:
        async with in_process(settings, pool) as (projections, runners):
            await send_all(settings, envelopes_for(workload([tenant], runs_per_tenant=1, seed=3)))
            await wait_until(lambda: caught_up(settings, projections), 60, "catch up")
            chain = [e for e in await events(settings) if e["tenant_id"] == tenant]
            forged = {**chain[-1], "chain_seq": chain[-1]["chain_seq"] + 2, "prev_hash": chain[-1]["hash"]}
            sent = await produce_raw(settings, encode(forged), tenant)
            await wait_until(lambda: all(r.admission.held for r in runners), 60, "both projectors to hold the tenant")
            expected = f"tenant {tenant} chain_seq {chain[-1]['chain_seq'] + 1}"
            holds = [(await p.holds())[tenant] for p in projections]
            assert [(h.offset, h.chain_seq, expected in h.reason, "gap" in h.reason) for h in holds] == \
                [(sent.offset, chain[-1]["chain_seq"] + 1, True, True)] * 2
            report = await projector_lag(settings, projections)
            assert [(r.status, r.lag_events, r.held_tenants) for r in report] == [("OK", 0, 1), ("OK", 0, 1)]
            assert [r.failed for r in runners] == [None, None]
            anonymous = health(None, runners)
            assert anonymous == {**{f"projector:{r.projection.name}": "degraded" for r in runners},
                                 **{f"projector:{r.projection.name}:held": [
                                     {"tenant_id": tenant, "partition": 0, "chain_seq": chain[-1]["chain_seq"] + 1}]
                                    for r in runners}}
            detailed = health(None, runners, detail=True)
            assert [expected in h["reason"] for r in runners for h in detailed[f"projector:{r.projection.name}:held"]] == [True, True]
    finally:
        await pool.close()


@pytest.mark.parametrize("garbage, problem", [(b"{not json", "the value is not JSON (Expecting property name"),
                                                (b"[1, 2, 3]", "the value is an array, not an envelope object")])
async def test_a_record_that_is_not_an_envelope_holds_the_tenant_its_key_names(garbage, problem):
    settings = make_settings(partitions=1)
    pool = await open_pool(settings)
    tenant, other = unique("tenant-"), unique("other-")
    try:
        async with in_process(settings, pool) as (projections, runners):
            await send_all(settings, envelopes_for(workload([tenant], runs_per_tenant=1, seed=3)))
            await wait_until(lambda: caught_up(settings, projections), 60, "catch up")
            applied = {p.name: await dump(pool, p.schema, TABLES[type(p)][0]) for p in projections}
            assert [len(applied["runs"]), applied["runs"][0][0]] == [1, tenant]
            sent = await produce_raw(settings, garbage, tenant)
            await send_all(settings, envelopes_for(workload([other], runs_per_tenant=1, seed=4)))
            await wait_until(lambda: caught_up(settings, projections), 60, "catch up past the garbage")
            expected = f"partition 0 offset {sent.offset}, tenant {tenant!r} (record key), tenant {tenant} chain_seq"
            holds = [(await p.holds()).get(tenant) for p in projections]
            assert [(h.offset, expected in h.reason, problem in h.reason) for h in holds] == [(sent.offset, True, True)] * 2
            # The tenant's rows stay as they were; the other tenant, after the garbage on the same partition, is in
            now = {p.name: await dump(pool, p.schema, TABLES[type(p)][0]) for p in projections}
            assert [[r for r in rows if r[0] == tenant] for rows in now.values()] == list(applied.values())
            assert len([r for r in now["runs"] if r[0] == other]) == 1
            theirs = [json.loads(r.value) for r in await read_topic(settings, settings.events_topic) if r.key == other.encode()]
            other_head = (theirs[-1]["chain_seq"], theirs[-1]["hash"])
            assert [await p.head(other) for p in projections] == [other_head, other_head]
    finally:
        await pool.close()


async def every_projector_caught_up(svc: Service) -> bool:
    import httpx
    from tests.support import token
    async with httpx.AsyncClient(base_url=svc.url, timeout=30) as http:
        response = await http.get("/v1/ops/projectors", headers={"Authorization": f"Bearer {token('ops', 'ci', ('admin',))}"})
    rows = response.json()["partitions"] if response.status_code == 200 else []
    return bool(rows) and all(r["lag_events"] == 0 for r in rows)


def kafka_tool_lag(settings, group: str) -> dict[int, tuple[int, int, int]]:
    import subprocess
    from tests.support import REPO
    out = subprocess.run(["bash", "infra/local/kafka-consumer-groups.sh", "--bootstrap-server",
                          settings.kafka_bootstrap, "--describe", "--group", group],
                         cwd=REPO, capture_output=True, text=True, timeout=180, check=True).stdout
    rows = {}
    for line in out.splitlines():
        cells = line.split()
        if len(cells) >= 6 and cells[0] == group and cells[1] == settings.events_topic:
            rows[int(cells[2])] = (int(cells[3]), int(cells[4]), int(cells[5]))
    return rows


async def test_reported_lag_agrees_with_kafkas_own_consumer_groups_tool():
    settings = make_settings(partitions=3)
    pool = await open_pool(settings)
    tenants = [unique("tenant-") for _ in range(6)]
    try:
        async with in_process(settings, pool) as (projections, _):
            await send_all(settings, envelopes_for(workload(tenants, runs_per_tenant=3, seed=21)))
            await wait_until(lambda: caught_up(settings, projections), 60, "catch up")
        async with in_process(settings, pool, with_projectors=False) as (projections, _):
            await send_all(settings, envelopes_for(workload(tenants, runs_per_tenant=2, seed=22)))
            ours = {r.partition: (r.position, r.end_offset, r.lag_events)
                    for r in await projector_lag(settings, projections) if r.projector == "runs"}
        assert sum(lag for _, _, lag in ours.values()) > 0
        used = {p: row for p, row in ours.items() if row[1] > 0}  # the tool lists partitions with a committed offset
        assert kafka_tool_lag(settings, f"{settings.topic_prefix}.projector.runs") == used
    finally:
        await pool.close()


async def test_clickhouse_models_after_kill_9_equal_a_fresh_rebuild(tmp_path):
    import itertools
    from collections import Counter
    import httpx
    from infra.adapters.clickhouse import ChdbClickHouse
    from projectors.audit import AuditProjection
    from projectors.cost import CostProjection
    from tests.support import end_offsets, token
    settings = make_settings(partitions=2)
    pool = await open_pool(settings)
    chdb_dir = tmp_path / "chdb"
    models = (AuditProjection, CostProjection)
    names = [cls.name for cls in models]
    ops = {"Authorization": f"Bearer {token('ops', 'ci', ('admin',))}"}
    # Waves of commands back to back, so that events keep arriving while the projector works
    waves = (envelopes_for(workload([unique("tenant-") for _ in range(4 if n == 0 else 2)],
                                    runs_per_tenant=20 if n == 0 else 10, seed=17 + n)) for n in itertools.count())

    async def stored_in_chdb() -> Positions:
        """The ClickHouse models' stored positions, read in the directory the killed projector left."""
        ch = ChdbClickHouse(str(chdb_dir))
        try:
            return {(cls.name, partition): pos.next_offset for cls in models
                    for partition, pos in (await (await cls(ch, settings.topic_prefix).open()).positions()).items()}
        finally:
            ch.close()
    try:
        async with in_process(settings, pool, with_projectors=False):
            projector = Service(settings, processor=False)  # API on, so ops can read lag inside chdb
            projector.env = lambda base=projector.env: {**base(), "RUNLEDGER_CHDB_PATH": str(chdb_dir)}

            async def applied_a_batch_with_events_left():
                nonlocal sender
                if sender.done():
                    await sender
                    sender = asyncio.create_task(send_all(settings, next(waves)))
                try:
                    async with httpx.AsyncClient(base_url=projector.url, timeout=10) as http:
                        response = await http.get("/v1/ops/projectors", headers=ops)
                except httpx.HTTPError:
                    return None  # not serving yet
                rows = [r for r in response.json()["partitions"] if r["projector"] in names] \
                    if response.status_code == 200 else []
                return mid_batch(names, {(r["projector"], r["partition"]): r["position"] for r in rows},
                                 {r["partition"]: r["end_offset"] for r in rows}, resumed_from)

            projector.start()
            sender = asyncio.create_task(send_all(settings, next(waves)))
            resumed_from: Positions = {}  # where the running projector's positions stood when it started
            kills, kills_mid_batch = 0, 0
            try:
                while kills_mid_batch < 2:
                    # Given a projector that has stored a batch since it started, with events left to apply
                    await wait_until(applied_a_batch_with_events_left, 120,
                                     "the projector to store a batch while events remain")
                    # When it is killed -9 there and then (frozen first, to read the log's end as it dies)
                    projector.pause()
                    ends = await end_offsets(settings, settings.events_topic)
                    projector.kill()
                    kills += 1
                    stored = await stored_in_chdb()
                    kills_mid_batch += mid_batch(names, stored, ends, resumed_from)  # so it was, as it died
                    resumed_from = stored
                    projector.start()
                    assert kills < 10, f"only {kills_mid_batch} of {kills} kills found the projector mid-batch"
                await sender
                await projector.ready(90, owning=False)
                await wait_until(lambda: every_projector_caught_up(projector), 120,
                                 "every projector in that process to catch up")
            finally:
                projector.stop()
        # Then each ClickHouse model equals a fresh rebuild, with one row per event it folds
        logged = Counter(e["type"] for e in await events(settings))
        rows_per_table = {"events": sum(logged.values()), "cost_entries": logged["budget.cost_recorded"],
                          "budget_projects": logged["budget.opened"]}
        ch = ChdbClickHouse(str(chdb_dir))
        try:
            for cls, tables in ((AuditProjection, ("events",)), (CostProjection, ("cost_entries", "budget_projects"))):
                live = await cls(ch, settings.topic_prefix).open()
                assert [r.lag_events for r in await projector_lag(settings, [live])] == [0, 0], f"{cls.name} behind"
                rebuilt, _ = await rebuild(settings, live, go_live=False)
                for table in tables:
                    query = "SELECT * FROM {db}." + table + " FINAL ORDER BY ALL"
                    ours = ch.query(query.replace("{db}", live.db))
                    fresh_rows = ch.query(query.replace("{db}", rebuilt.db))
                    assert ours == fresh_rows, f"{cls.name}.{table} differs from a fresh rebuild"
                    assert len(ours) == rows_per_table[table], f"{cls.name}.{table}"
        finally:
            ch.close()
    finally:
        await pool.close()
