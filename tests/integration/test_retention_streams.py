"""A stream over a channel a retention sweep has removed rows from: the reader skips the missing seqs.

Tenant A's operational sweep (the story of test_retention_folds.py) removes run 1's family: a range of
seqs from the middle of A's tenant channel and the whole of run 1's channel, whose head keeps its seq. The replay
and the live tail of streams/reader.py must send every surviving row once, in order, without
looping or waiting on the missing range.
"""
import asyncio
import json
import re
from types import SimpleNamespace

import pytest

from infra.adapters.postgres import open_pool
from projectors.base import Batch
from projectors.channels import ChannelsProjection
from streams.hub import ChannelHub
from streams.reader import ChannelReader
from tests.integration.test_retention_folds import A, in_family, pg_rows, the_story, uid
from tests.support import make_settings


@pytest.fixture
async def pool():
    pg = await open_pool(make_settings(), max_size=3)
    try:
        yield pg
    finally:
        await pg.close()


def ids(chunk: bytes) -> list[int]:
    return [int(n) for n in re.findall(rb"^id: (\d+)", chunk, re.MULTILINE)]


async def test_a_stream_reader_passes_over_the_seqs_a_sweep_removed(pool):
    story = the_story()
    # Given tenant A's channels after its sweep: run 1's family is gone from the tenant channel
    prefix = make_settings().topic_prefix
    channels = await ChannelsProjection(pool, prefix).open()
    await channels.apply([Batch(0, story.pre + story.sweeps, len(story.pre) + 2)])
    rows = await pg_rows(pool, f"SELECT seq, type, envelope::text AS envelope FROM {channels.schema}.channel_events "
                               "WHERE tenant_id = %s AND channel = 'tenant' ORDER BY seq", (A,))
    head = rows[-1]["seq"]
    seqs = [r["seq"] for r in rows]
    # (the tenant channel's seq is the chain_seq: every event of the tenant is on it)
    survivors = [e["chain_seq"] for e in story.pre + story.sweeps if e["tenant_id"] == A and not in_family(e)]
    assert (seqs, head) == (survivors, survivors[-1])
    assert survivors != list(range(1, head + 1))  # the sweep did remove a range from the middle
    hub = ChannelHub(database_url=make_settings().database_url, pool=pool, topic_prefix=prefix)
    tables = SimpleNamespace(pool=pool, generations=channels.generations)

    # When a client replays the tenant channel from the start, then gets the next live event
    reader = await ChannelReader.open(tables, hub, A, "tenant")
    frames = reader.frames(0)
    try:
        await asyncio.wait_for(anext(frames), 5)  # the retry comment
        # Then the replay is every surviving row, once, in order
        assert ids(await asyncio.wait_for(anext(frames), 5)) == seqs
        reader.sub.queue.put_nowait({**rows[-1], "seq": head + 1})
        assert ids(await asyncio.wait_for(anext(frames), 5)) == [head + 1]
    finally:
        await frames.aclose()

    # When the live tail finds a gap wholly swept (the last survivor before the swept range → the first after
    # it), or one with survivors in it (0 → head)
    k = next(i for i in range(len(seqs) - 1) if seqs[i + 1] > seqs[i] + 1)
    for last, item, expected in ((seqs[k], rows[k + 1], [seqs[k + 1]]), (0, rows[-1], seqs)):
        sub = hub.subscribe(A, "tenant")
        tail = ChannelReader(hub, sub, channels.schema, head, 1).live(last)
        try:
            sub.queue.put_nowait(dict(item))
            # Then it sends what survives up to the event, without looping or waiting on what is gone
            assert ids(await asyncio.wait_for(anext(tail), 5)) == expected
        finally:
            await tail.aclose()
            hub.unsubscribe(sub)

    # When a client resumes run 1's channel, which the sweep emptied, it is told everything up to its head is gone
    reader = await ChannelReader.open(tables, hub, A, f"run:{uid(A, 1, 'run')}")
    assert (reader.head, reader.oldest) == (20, 21)
    frames = reader.frames(3)
    try:
        await asyncio.wait_for(anext(frames), 5)
        notice = await asyncio.wait_for(anext(frames), 5)
        assert (notice.event, json.loads(notice.data)) == ("replay_incomplete", {
            "reason": "trimmed", "requested_after": 3, "resumes_after": 20})
    finally:
        await frames.aclose()
