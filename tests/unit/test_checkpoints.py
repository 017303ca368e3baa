"""Signed checkpoints on the chain: the processor signs each tenant's tree head every N events or T seconds."""
import base64
import uuid

from domain.evidence import CheckpointSigner
from domain.ledger import TenantLedger
from schemas.merkle import check_inclusion, inclusion_proof, leaf_hash, root
from schemas.notes import Checkpoint, Signer, Verifier
from tests.support import command, make_settings, unique, wait_until
from tests.unit.harness import Harness
from tests.unit.test_processor_on_twin import running, send, topic, twin

SEED = bytes(range(32))


def leaves(chain: list[dict], size: int) -> list[bytes]:
    """The tree's leaf values: the first `size` event hashes, as bytes."""
    return [bytes.fromhex(e["hash"]) for e in chain[:size]]


def sign(h: Harness) -> dict:
    reply, envelopes = h.ledger.execute({"command_id": str(uuid.uuid4()), "tenant_id": "acme", "idempotency_key": None,
                                         "request_digest": "c", "body": {"type": "SignCheckpoint"},
                                         "actor": {"subject": "runledger:checkpoints", "roles": ["system"]}}, h.now)
    h.log.extend(envelopes)
    return reply


def test_a_checkpoint_signs_the_root_of_every_event_before_it_and_verifies_offline():
    h = Harness()
    h.ledger.signer = CheckpointSigner("prod-eu", SEED)
    for _ in range(5):
        h.ok({"type": "RequestRun", "agent_id": "a"})
    assert sign(h)["status"] == "accepted"
    signed = h.log[-1]
    assert (signed["type"], signed["payload"]["size"], signed["payload"]["origin"]) == (
        "checkpoint.signed", 5, "runledger/prod-eu/acme")
    verifier = Verifier.from_vkey(signed["payload"]["key"])
    assert verifier.vkey == Signer("runledger/prod-eu/acme", SEED).vkey
    checkpoint, _ = Checkpoint.open(signed["payload"]["note"].encode(), [verifier], "runledger/prod-eu/acme")
    assert (checkpoint.size, checkpoint.root) == (5, root(leaves(h.log, 5)))
    assert base64.b64decode(signed["payload"]["root"]) == checkpoint.root
    for index in range(5):
        check_inclusion(leaf_hash(leaves(h.log, 5)[index]), index, 5, inclusion_proof(leaves(h.log, 5), index), checkpoint.root)


def test_nothing_new_to_sign_is_refused_and_the_tree_is_rebuilt_from_the_log():
    h = Harness()
    h.ledger.signer = CheckpointSigner("local", SEED)
    h.ok({"type": "RequestRun", "agent_id": "a"})
    sign(h)
    assert h.ledger.unsigned == 0
    assert (sign(h)["code"], h.ledger.tree.size) == ("nothing_to_sign", 3)  # its own 2 events are leaves, unsigned
    rebuilt = TenantLedger("acme", signer=CheckpointSigner("local", SEED))
    for env in h.log:
        rebuilt.apply(env)
    assert (rebuilt.tree.size, rebuilt.tree.root(), rebuilt.unsigned) == (
        h.ledger.tree.size, h.ledger.tree.root(), h.ledger.unsigned)


def test_without_a_signing_key_no_checkpoint_is_made():
    h = Harness()
    h.ok({"type": "RequestRun", "agent_id": "a"})
    assert sign(h)["code"] == "no_signing_key"


async def test_the_processor_signs_once_n_events_are_unsigned():
    settings = make_settings(partitions=1, checkpoint_every=3, checkpoint_interval_s=0, timer_interval_s=0.02)
    log, tenant = twin(settings), unique("t-")

    def signed(count: int):
        def check():
            found = [e for e in topic(log, settings.events_topic)
                     if e["tenant_id"] == tenant and e["type"] == "checkpoint.signed"]
            return found if len(found) >= count else None
        return check
    async with running(settings, log, owning=1):
        send(log, settings, [command(tenant, {"type": "RequestRun", "agent_id": "a"}) for _ in range(2)])
        send(log, settings, [command(tenant, {"type": "RequestRun", "agent_id": "a"}) for _ in range(2)])
        first = await wait_until(signed(1), 10, "a checkpoint once 3 events are unsigned")
        send(log, settings, [command(tenant, {"type": "RequestRun", "agent_id": "a"}) for _ in range(3)])
        checkpoints = await wait_until(signed(2), 10, "a second checkpoint after 3 more")
    chain = [e for e in topic(log, settings.events_topic) if e["tenant_id"] == tenant]
    assert checkpoints[0] == first[0]
    assert [cp["payload"]["size"] for cp in checkpoints] == [
        cp["chain_seq"] - (2 if i == 0 else 1) for i, cp in enumerate(checkpoints)]  # all that came before
    for cp in checkpoints:
        assert base64.b64decode(cp["payload"]["root"]) == root(leaves(chain, cp["payload"]["size"]))
    assert checkpoints[1]["payload"]["size"] - checkpoints[0]["chain_seq"] >= 3
