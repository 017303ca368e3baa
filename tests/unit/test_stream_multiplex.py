"""The multiplexed stream's reading, on fake channels: replay, the live tail of several channels, gaps,
notices, overflow, and exact resumption from any message's id (streams/mux.py)."""
import asyncio
import json
import random
import re

import pytest
from hypothesis import given, settings, strategies as st
from sse_starlette.sse import ServerSentEvent

from infra.adapters.http.openapi import POSITIONS as DOCUMENTED_POSITIONS
from streams.hub import Subscription
from streams.mux import BadChannel, BadPositions, Lane, Multiplex, channel_of, channels_of, positions_of

RUN = "01A20000-0000-7000-8000-000000000001"


class FakeReader:
    """A channel's table and its hub subscription, as ChannelReader offers them to a Multiplex."""

    def __init__(self, key: str, head: int = 0, oldest: int = 1, buffer: int = 1000):
        self.sub = Subscription("acme", key, asyncio.Queue(buffer))
        self.table: dict[int, dict] = {}
        self.head, self.oldest, self.closed = head, oldest, False
        for seq in range(oldest, head + 1):
            self.table[seq] = row(key, seq)

    async def rows(self, after: int, upto: int | None = None) -> list[dict]:
        return [self.table[s] for s in sorted(self.table) if s > after and (upto is None or s <= upto)][:3]

    def publish(self, seq: int, offer: bool = True, store: bool = True) -> None:
        new = row(self.sub.channel, seq)
        if store:
            self.table[seq] = new
        if offer:
            self.sub.offer(new)

    def close(self) -> None:
        self.closed = True


def row(key: str, seq: int) -> dict:
    return {"seq": seq, "type": "run.step_started", "envelope": json.dumps({"channel": key, "seq": seq})}


def multiplex(*readers: FakeReader) -> Multiplex:
    return Multiplex([Lane(channel_of(name_of(r.sub.channel)), r) for r in readers], applied=41)


def name_of(key: str) -> str:
    return key.replace("run:", "runs/")


def parse(chunks: list) -> list[dict]:
    """The messages (id, event, data) of what a Multiplex yielded, as a client reads them."""
    text = b"".join(c.encode() if isinstance(c, ServerSentEvent) else c for c in chunks).decode()
    messages = []
    for block in filter(None, text.split("\r\n\r\n")):
        fields = dict(line.split(": ", 1) for line in block.split("\r\n") if not line.startswith(":") and ": " in line)
        if "data" in fields:
            messages.append({"id": fields.get("id"), "event": fields.get("event"), "data": json.loads(fields["data"])})
    return messages


async def take(frames, count: int) -> list[dict]:
    """Read from the generator until `count` messages (events, notices) have arrived."""
    chunks, got = [], []
    while len(got) < count:
        chunks.append(await asyncio.wait_for(anext(frames), 5))
        got = parse(chunks)
    return got


def events(messages: list[dict]) -> list[tuple[str, int, str]]:
    return [(m["event"], m["data"]["seq"], m["id"]) for m in messages if "seq" in m["data"]]


# --- names and positions --------------------------------------------------------------------------

def test_channels_are_named_as_their_streams_and_a_run_in_any_uuid_spelling():
    assert [(c.name, c.key) for c in channels_of(["approvals", f"runs/{RUN}", "tenant"])] == [
        ("approvals", "approvals"), (f"runs/{RUN.lower()}", f"run:{RUN.lower()}"), ("tenant", "tenant")]
    for bad in (["runs/not-a-uuid"], ["audit"], ["tenant", "tenant"], [f"runs/{RUN}", f"runs/{RUN.lower()}"]):
        with pytest.raises(BadChannel):
            channels_of(bad)


def test_a_resume_point_is_one_position_or_nothing_per_channel():
    assert positions_of(None, 2) == positions_of("", 2) == [None, None]
    assert positions_of("12.0", 2) == [12, 0]
    assert positions_of(".7", 2) == [None, 7]
    assert positions_of("5", 1) == [5]
    for bad, count in (("1.2", 1), ("1", 2), ("1.2.3", 2), ("a.1", 2), ("1.-1", 2), ("1" * 19, 1), ("²", 1)):
        with pytest.raises(BadPositions):
            positions_of(bad, count)


@settings(max_examples=300, deadline=None, database=None)
@given(raw=st.one_of(st.text(alphabet="0123456789.", max_size=40), st.text(max_size=20)),
       count=st.integers(1, 8))
def test_the_documented_resume_point_is_the_one_the_stream_applies(raw, count):
    try:
        found = positions_of(raw, count)
    except BadPositions:
        assert re.fullmatch(DOCUMENTED_POSITIONS, raw) is None or raw.count(".") != count - 1, repr(raw)
    else:
        assert raw == "" or (re.fullmatch(DOCUMENTED_POSITIONS, raw) and len(found) == count), repr(raw)


# --- reading ------------------------------------------------------------------------------------

def ids_follow_positions(start: dict[str, int], messages: list[dict], order: list[str]) -> bool:
    """Each event's id is every channel's position after it: the running positions, in the order asked."""
    at = dict(start)
    for name, seq, id_ in events(messages):
        at[name] = seq
        if id_ != ".".join(str(at[n]) for n in order):
            return False
    return True


async def test_it_replays_each_channel_then_tails_them_all_with_every_position_in_each_id():
    # Given an approvals channel at 4 and a run channel at 2
    approvals, run = FakeReader("approvals", head=4), FakeReader(f"run:{RUN.lower()}", head=2)
    run_name = f"runs/{RUN.lower()}"
    frames = multiplex(approvals, run).frames([1, 0])
    # When a client asks for approvals after 1 and the run from its start
    first = await take(frames, 6)
    # Then it is told where each starts, then gets each channel's events, each id naming both positions
    assert (first[0]["event"], first[0]["id"], first[0]["data"]) == (
        "subscribed", "1.0", {"channels": ["approvals", run_name], "positions": {"approvals": 1, run_name: 0},
                              "chain_seq": 41})
    assert events(first) == [("approvals", 2, "2.0"), ("approvals", 3, "3.0"), ("approvals", 4, "4.0"),
                             (run_name, 1, "4.1"), (run_name, 2, "4.2")]
    # And, live, the events of either channel, each channel's in its order
    run.publish(3)
    approvals.publish(5)
    run.publish(4)
    live = await take(frames, 3)
    assert [seq for name, seq, _ in events(live) if name == run_name] == [3, 4]
    assert [seq for name, seq, _ in events(live) if name == "approvals"] == [5]
    assert ids_follow_positions({"approvals": 4, run_name: 2}, live, ["approvals", run_name])
    assert live[-1]["id"] == "5.4"
    await frames.aclose()
    assert approvals.closed and run.closed


async def test_a_gap_in_the_live_tail_is_read_from_the_table_and_the_seam_sends_nothing_twice():
    # Given a channel followed live from its head, 2
    channel = FakeReader("approvals", head=2)
    frames = multiplex(channel).frames([None])
    assert (await take(frames, 1))[0]["id"] == "2"
    # When 3 and 4 reach the table but only 5 is offered (the hub reads only a notification's head), then 4 again
    channel.publish(3, offer=False)
    channel.publish(4, offer=False)
    channel.publish(5)
    channel.sub.offer(channel.table[4])
    channel.publish(6)
    got = await take(frames, 4)
    # Then 3, 4 and 5 arrive in order, and 4 once
    assert events(got) == [("approvals", 3, "3"), ("approvals", 4, "4"), ("approvals", 5, "5"), ("approvals", 6, "6")]
    await frames.aclose()


async def test_a_position_it_never_issued_or_no_longer_keeps_is_said_per_channel():
    ahead, trimmed = FakeReader("approvals", head=3), FakeReader("tenant", head=9, oldest=6)
    frames = multiplex(ahead, trimmed).frames([7, 2])
    got = await take(frames, 7)
    assert got[0]["id"] == "3.5"
    assert [m["data"] for m in got[1:3]] == [
        {"channel": "approvals", "reason": "unknown_id", "requested_after": 7, "resumes_after": 3},
        {"channel": "tenant", "reason": "trimmed", "requested_after": 2, "resumes_after": 5}]
    assert events(got) == [("tenant", s, f"3.{s}") for s in (6, 7, 8, 9)]
    await frames.aclose()


async def test_a_client_too_far_behind_is_told_where_to_resume_and_the_stream_ends():
    fast, slow = FakeReader("approvals", head=1), FakeReader("tenant", head=1, buffer=2)
    frames = multiplex(fast, slow).frames([None, None])
    await take(frames, 1)
    for seq in (2, 3, 4):  # offered only (not in the table), so that they can only come from the queue
        slow.publish(seq, store=False)  # the third finds the buffer full: the subscriber is cut off
    got = []
    async for chunk in frames:
        got.append(chunk)
    overflow = [m for m in parse(got) if m["event"] == "overflow"]
    assert overflow == [{"id": None, "event": "overflow",
                         "data": {"channel": "tenant", "reason": "this client fell too far behind", "resume_after": "1.1"}}]
    assert fast.closed and slow.closed


async def test_resuming_from_any_message_id_continues_every_channel_exactly():
    # Given two channels that keep getting events, before and while a client is connected
    rng = random.Random(7)
    approvals, tenant = FakeReader("approvals", head=5), FakeReader("tenant", head=8)
    received: list[tuple[str, int, str]] = []
    last, connections = "0.0", 0

    def publish(live: bool) -> None:
        reader = rng.choice((approvals, tenant))
        reader.publish(len(reader.table) + 1, offer=live)

    # When the client reconnects again and again, each time from the id of the last message it read
    while connections < 25:
        publish(live=False)
        for reader in (approvals, tenant):  # a new connection subscribes, then reads each channel's head
            reader.sub = Subscription("acme", reader.sub.channel, asyncio.Queue(1000))
            reader.head = len(reader.table)
        frames = multiplex(approvals, tenant).frames(positions_of(last, 2))
        got = await take(frames, 1)
        assert got[0]["id"] == last  # the stream starts exactly where the client stopped
        for _ in range(rng.randint(0, 2)):
            publish(live=True)
        available = len(approvals.table) + len(tenant.table) - len(received)
        got = await take(frames, min(rng.randint(1, 4), available)) if available else got
        await frames.aclose()
        received += events(got)
        last = next((m["id"] for m in reversed(got) if m["id"]), last)
        connections += 1
    # Then it has had each channel's events once each, in order, with nothing skipped
    approvals_seen = [seq for name, seq, _ in received if name == "approvals"]
    tenant_seen = [seq for name, seq, _ in received if name == "tenant"]
    assert approvals_seen == list(range(1, len(approvals_seen) + 1))
    assert tenant_seen == list(range(1, len(tenant_seen) + 1))
    assert len(received) > 40 and last == f"{approvals_seen[-1]}.{tenant_seen[-1]}"
