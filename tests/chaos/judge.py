"""The judge: an independent reading of ledger.events, and what it must show.

The log is read with a plain aiokafka consumer (read_committed, every partition from offset 0 to its
last stable offset), not the project's reader. Every acknowledged command must be there exactly once,
at the chain_seqs and hashes its answer named; nothing else may be there (no event of a rejected
command, no event no answer claimed: a doubled effect shows up so); each tenant's chain_seq is gapless
from 1, no (tenant, chain_seq) twice, and the chain verifies with the project's verifier.
"""
import json
import time
from collections import Counter, defaultdict

from aiokafka import AIOKafkaConsumer, TopicPartition

from schemas.chain import verify_chain
from tests.chaos.load import Answer
from tests.chaos.sse import Follower

STALL_S = 60  # a partition read that makes no progress for this long is a failure, not a wait


async def read_log(bootstrap: str, topic: str, partitions: int) -> dict[str, list[dict]]:
    """Every committed envelope of the topic's partitions, per tenant, in offset order."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, isolation_level="read_committed",
                                enable_auto_commit=False, auto_offset_reset="earliest", group_id=None)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)  # under read_committed: the last stable offset
        chains: dict[str, list[dict]] = defaultdict(list)
        for tp in tps:
            deadline = time.monotonic() + STALL_S
            while await consumer.position(tp) < ends[tp]:
                if time.monotonic() > deadline:
                    raise AssertionError(f"{tp} stalled at {await consumer.position(tp)} of {ends[tp]}")
                for record in (await consumer.getmany(tp, timeout_ms=1000)).get(tp, []):
                    deadline = time.monotonic() + STALL_S
                    envelope = json.loads(record.value)
                    chains[envelope["tenant_id"]].append(envelope)
        return dict(chains)
    finally:
        await consumer.stop()


def command_of(answer: Answer) -> str:
    """The command whose events these are: a replayed answer names the first command of its key."""
    return answer.body.get("original_command_id") or answer.body["command_id"]


def judge_log(chains: dict[str, list[dict]], tenants: list[str], accepted: list[Answer],
              rejected: list[Answer]) -> dict[str, list]:
    problems: dict[str, list] = {k: [] for k in (
        "not_gapless", "seq_twice", "chain_broken", "ack_not_in_log", "ack_hash_differs", "ack_events_not_once",
        "claimed_twice", "unclaimed_events", "rejected_in_log")}
    by_seq = {t: {} for t in tenants}
    for tenant in tenants:
        chain = chains.get(tenant, [])
        seqs = [e["chain_seq"] for e in chain]
        if seqs != list(range(1, len(seqs) + 1)):
            problems["not_gapless"].append((tenant, first_break(seqs)))
        problems["seq_twice"] += [(tenant, s, n) for s, n in Counter(seqs).items() if n > 1]
        verdict = verify_chain(tenant, chain)
        if not verdict.ok or verdict.count != len(chain):
            problems["chain_broken"].append((tenant, verdict.bad_seq, verdict.problem))
        for e in chain:
            by_seq[tenant].setdefault(e["chain_seq"], e)
    events_of = Counter((t, e["command_id"]) for t in tenants for e in chains.get(t, []))
    claimed: Counter = Counter()
    for answer in accepted:
        told = answer.body["events"]
        for event in told:
            logged = by_seq[answer.tenant].get(event["chain_seq"])
            claimed[(answer.tenant, event["chain_seq"])] += 1
            if logged is None:
                problems["ack_not_in_log"].append((answer.tenant, answer.key, event["chain_seq"]))
            elif (logged["hash"], logged["event_id"], logged["command_id"]) != (
                    event["hash"], event["event_id"], command_of(answer)):
                problems["ack_hash_differs"].append((answer.tenant, answer.key, event["chain_seq"]))
        if events_of[(answer.tenant, command_of(answer))] != len(told):
            problems["ack_events_not_once"].append((answer.tenant, answer.key, len(told),
                                                    events_of[(answer.tenant, command_of(answer))]))
    problems["claimed_twice"] = [k for k, n in claimed.items() if n > 1]
    problems["unclaimed_events"] = [(t, e["chain_seq"], e["type"]) for t in tenants for e in chains.get(t, [])
                                    if (t, e["chain_seq"]) not in claimed]
    problems["rejected_in_log"] = [(a.tenant, a.key) for a in rejected
                                   if events_of[(a.tenant, a.body.get("command_id"))]]
    return problems


def first_break(seqs: list[int]) -> str:
    for expected, seq in enumerate(seqs, 1):
        if seq != expected:
            return f"at position {expected}: chain_seq {seq}"
    return "none"


def judge_streams(chains: dict[str, list[dict]], followers: list[Follower]) -> dict[str, list]:
    """Each follower got every event of its tenant once, in chain order, with ids 1, 2, 3 … (no gap, no duplicate)."""
    problems: dict[str, list] = {"ids_not_1_to_n": [], "chain_seqs_not_the_chain": [], "notices": []}
    for f in followers:
        ids = [i for i, _, _ in f.received]
        seqs = [s for _, s, _ in f.received]
        if ids != list(range(1, len(ids) + 1)):
            problems["ids_not_1_to_n"].append((f.tenant, first_break(ids), len(ids) - len(set(ids))))
        if seqs != [e["chain_seq"] for e in chains.get(f.tenant, [])]:
            problems["chain_seqs_not_the_chain"].append((f.tenant, first_break(seqs), len(seqs)))
        problems["notices"] += [(f.tenant, *n) for n in f.notices]
    return problems
