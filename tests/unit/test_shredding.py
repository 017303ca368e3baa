"""Content is never in clear on the log; shredding destroys a subject's keys and every chain still verifies.

The processor runs on the in-memory event log with the in-memory key store (both pass the same
contract suites as Kafka and PostgreSQL: tests/eventlog_contract.py, tests/keys_contract.py).
"""
import asyncio
import json
import os
import uuid

from commands.processor import CommandProcessor
from domain.content import WITHHELD, WITHHELD_SHREDDED
from infra.adapters.keys import SHREDDED, content_aad, is_sealed, open_sealed
from infra.adapters.keys.memory import KeyRows, MemoryKeyStore
from schemas.chain import ChainVerdict, verify_chain
from tests.support import command, make_settings, unique, wait_until
from tests.unit.test_processor_on_twin import Clock, answered, send, topic, twin

ADMIN = ("admin",)
KEK = {"kek-1": os.urandom(32)}


def store(rows: KeyRows | None = None) -> MemoryKeyStore:
    return MemoryKeyStore(KEK, "kek-1", rows)


async def decide(settings, log, keys, commands) -> dict[str, dict]:
    """Start a processor with this key store, send the commands at once (one batch), return their replies."""
    processor = CommandProcessor(settings, Clock(), log_=log, keys=keys)
    stop = asyncio.Event()
    task = asyncio.create_task(processor.run(stop))
    try:
        await wait_until(lambda: len(processor.owners) == settings.partitions or task.done(), 10, "owning")
        send(log, settings, commands)
        replies = await answered(log, settings, commands)
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
    return {cid: r[-1] for cid, r in replies.items()}


def events(log, settings, tenant: str) -> list[dict]:
    return [e for e in topic(log, settings.events_topic) if e["tenant_id"] == tenant]


def run_commands(tenant: str, subject: str, reason: str) -> tuple[str, list[dict]]:
    run = str(uuid.uuid4())
    return run, [command(tenant, {"type": "RequestRun", "agent_id": "a", "run_id": run, "labels": {"team": "x"}},
                         subject=subject),
                 command(tenant, {"type": "CancelRun", "run_id": run, "reason": reason}, subject=subject)]


async def test_by_default_content_is_withheld_and_nothing_readable_reaches_the_log():
    settings, tenant = make_settings(partitions=1), unique("t-")
    log = twin(settings)
    _, sent = run_commands(tenant, "alice", "customer Jane Roe asked to stop")
    await decide(settings, log, store(), sent)
    cancelled = events(log, settings, tenant)[-1]
    assert (cancelled["type"], cancelled["payload"]["reason"]) == ("run.cancelled", WITHHELD)
    assert events(log, settings, tenant)[0]["payload"]["labels"] == WITHHELD
    assert "Jane Roe" not in json.dumps(topic(log, settings.events_topic))


async def test_opted_in_content_is_sealed_per_author_then_shredded_and_the_chain_still_verifies():
    settings, tenant = make_settings(partitions=1), unique("t-")
    log, keys = twin(settings), store()
    _, sent = run_commands(tenant, "alice", "customer Jane Roe asked to stop")
    _, other = run_commands(tenant, "bob", "bob's own words")
    opt_in = command(tenant, {"type": "SetContentPolicy", "store_content": True}, roles=ADMIN)
    await decide(settings, log, keys, [opt_in] + sent + other)
    chain = events(log, settings, tenant)
    sealed = next(e for e in chain if e["type"] == "run.cancelled" and e["actor"]["subject"] == "alice")["payload"]["reason"]
    assert is_sealed(sealed) and "Jane Roe" not in json.dumps(chain)
    key_id = sealed["kid"]
    key = (await keys.keys(tenant, [key_id]))[key_id]
    assert open_sealed(sealed, key, content_aad(tenant, "alice", key_id)) == "customer Jane Roe asked to stop"

    shred = command(tenant, {"type": "ShredSubject", "subject": "alice", "reason": "erasure request 117"}, roles=ADMIN)
    after = command(tenant, {"type": "RequestRun", "agent_id": "a", "labels": {"k": "v"}}, subject="alice")
    replies = await decide(settings, log, keys, [shred])
    await decide(settings, log, keys, [after])  # alice writes again later: a new key, the old content stays shredded
    assert replies[shred["command_id"]]["status"] == "accepted"
    chain = events(log, settings, tenant)
    shredded = next(e for e in chain if e["type"] == "retention.subject_shredded")
    assert shredded["payload"] == {"subject": "alice", "key_ids": [key_id], "reason": "erasure request 117"}
    assert await keys.keys(tenant, [key_id]) == {}
    assert open_sealed(sealed, None, content_aad(tenant, "alice", key_id)) == SHREDDED
    bob = next(e for e in chain if e["type"] == "run.cancelled" and e["actor"]["subject"] == "bob")["payload"]["reason"]
    bob_key = (await keys.keys(tenant, [bob["kid"]]))[bob["kid"]]
    assert open_sealed(bob, bob_key, content_aad(tenant, "bob", bob["kid"])) == "bob's own words"
    assert verify_chain(tenant, chain) == ChainVerdict(True, len(chain), chain[-1]["hash"])
    assert is_sealed(chain[-1]["payload"]["labels"]) and chain[-1]["payload"]["labels"]["kid"] != key_id


async def test_a_shred_under_hold_is_refused_naming_the_hold_and_destroys_nothing():
    settings, tenant = make_settings(partitions=1), unique("t-")
    log, keys = twin(settings), store()
    run, sent = run_commands(tenant, "alice", "words")
    opt_in = command(tenant, {"type": "SetContentPolicy", "store_content": True}, roles=ADMIN)
    hold = command(tenant, {"type": "PlaceLegalHold", "matter": "Doe v. Acme", "reason": "r",
                            "scope": {"kind": "run", "run_id": run}}, roles=ADMIN)
    await decide(settings, log, keys, [opt_in] + sent + [hold])
    before = events(log, settings, tenant)
    hold_id = before[-1]["aggregate_id"]
    shred = command(tenant, {"type": "ShredSubject", "subject": "alice", "reason": "r"}, roles=ADMIN)
    unknown = command(tenant, {"type": "ShredSubject", "subject": "nobody", "reason": "r"}, roles=ADMIN)
    replies = await decide(settings, log, keys, [shred, unknown])
    assert (replies[shred["command_id"]]["code"], replies[unknown["command_id"]]["code"]) == (
        "shred_under_hold", "not_found")
    assert f"{hold_id} (Doe v. Acme)" in replies[shred["command_id"]]["reason"]
    assert events(log, settings, tenant) == before
    assert await keys.subject_keys(tenant, "alice") == [before[-2]["payload"]["reason"]["kid"]]


async def test_opting_in_is_refused_where_no_key_store_is_configured():
    settings, tenant = make_settings(partitions=1), unique("t-")
    log = twin(settings)
    opt_in = command(tenant, {"type": "SetContentPolicy", "store_content": True}, roles=ADMIN)
    replies = await decide(settings, log, None, [opt_in])
    assert replies[opt_in["command_id"]]["code"] == "content_storage_not_configured"


async def test_a_command_after_a_shred_in_the_same_batch_stores_no_content_under_the_destroyed_key():
    settings, tenant = make_settings(partitions=1), unique("t-")
    log, keys = twin(settings), store()
    _, sent = run_commands(tenant, "alice", "first")
    opt_in = command(tenant, {"type": "SetContentPolicy", "store_content": True}, roles=ADMIN)
    shred = command(tenant, {"type": "ShredSubject", "subject": "alice", "reason": "r"}, roles=ADMIN)
    retry = command(tenant, {"type": "RequestRun", "agent_id": "a", "labels": {"k": "later"}}, subject="alice")
    await decide(settings, log, keys, [opt_in] + sent + [shred, retry])
    assert events(log, settings, tenant)[-1]["payload"]["labels"] == WITHHELD_SHREDDED


async def test_a_successor_destroys_the_keys_of_a_shred_whose_owner_died_before_destroying_them():
    settings, tenant = make_settings(partitions=1), unique("t-")
    log, rows = twin(settings), KeyRows()
    _, sent = run_commands(tenant, "alice", "words")
    opt_in = command(tenant, {"type": "SetContentPolicy", "store_content": True}, roles=ADMIN)
    await decide(settings, log, store(rows), [opt_in] + sent)
    crashing = store(rows)

    async def dies_before_destroying(tenant_id, key_ids):
        return []
    crashing.forget = dies_before_destroying
    shred = command(tenant, {"type": "ShredSubject", "subject": "alice", "reason": "r"}, roles=ADMIN)
    await decide(settings, log, crashing, [shred])
    key_ids = events(log, settings, tenant)[-1]["payload"]["key_ids"]
    assert list((await store(rows).keys(tenant, key_ids))) == key_ids  # still there: the owner "died"
    successor = store(rows)
    await decide(settings, log, successor, [command(tenant, {"type": "RequestRun", "agent_id": "a"})])
    assert await successor.keys(tenant, key_ids) == {}
