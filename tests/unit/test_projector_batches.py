"""One store per poll: bookkeeping rows for every partition of a poll, and the bounded lookup memory."""
from datetime import datetime, timezone

from projectors.base import Batch
from projectors.ch import Recent, progress_rows
from projectors.runs import RunsProjection


def env(tenant: str, seq: int, at: str) -> dict:
    return {"tenant_id": tenant, "chain_seq": seq, "hash": f"{tenant}-{seq}", "recorded_at": at}


POLL = [Batch(0, [env("a", 1, "t1"), env("b", 1, "t2"), env("a", 2, "t3")], 10),
        Batch(3, [env("c", 7, "t4")], 44)]


def test_clickhouse_progress_has_each_partitions_position_and_each_tenants_last_head():
    now = datetime(2026, 12, 1, tzinfo=timezone.utc)
    rows = [row for batch in POLL for row in progress_rows(batch, now)]
    assert rows == [(0, 10, "", 0, "", "t3", now), (0, 10, "a", 2, "a-2", "t3", now), (0, 10, "b", 1, "b-1", "t2", now),
                    (3, 44, "", 0, "", "t4", now), (3, 44, "c", 7, "c-7", "t4", now)]


def test_postgres_bookkeeping_writes_heads_once_per_tenant_and_a_position_per_partition():
    projection = RunsProjection(pool=None, topic_prefix="p")
    projection.schema = "s"
    statements = projection.bookkeeping(POLL)
    heads = [params for sql, params in statements if "INTO s.heads" in sql]
    positions = [params for sql, params in statements if "INTO s.positions" in sql]
    assert heads == [("a", 2, "a-2"), ("b", 1, "b-1"), ("c", 7, "c-7")]
    assert positions == [(0, 10, "t3"), (3, 44, "t4")]


def test_recent_keeps_the_newest_entries_up_to_its_limit():
    known = Recent(limit=3)
    known.remember({1: "a", 2: "b"})
    known.remember({3: "c", 4: "d"})
    assert known == {2: "b", 3: "c", 4: "d"}
    known.remember({})
    assert list(known) == [2, 3, 4]
