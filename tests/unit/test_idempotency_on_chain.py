"""Idempotency keys are evidence: an event records its command's key, and only when there was one."""
import hashlib

from domain.ledger import TenantLedger
from schemas.chain import ChainVerdict, verify_chain
from schemas.envelope import Envelope, canonical, compute_hash
from tests.unit.harness import Harness


def test_every_event_of_a_keyed_command_carries_its_key_and_hashes_over_it():
    h = Harness()
    run = h.ok({"type": "RequestRun", "agent_id": "a"}, key="run-1")
    h.ok({"type": "StartRun", "run_id": run})
    keyed = h.log[0]
    assert (keyed["type"], keyed["idempotency_key"]) == ("run.requested", "run-1")
    assert b'"idempotency_key":"run-1"' in canonical(keyed)
    assert compute_hash(keyed) == keyed["hash"] == hashlib.sha256(canonical(keyed)).hexdigest()
    # Changing the key on the chain changes the hash: the key is covered by it
    assert compute_hash({**keyed, "idempotency_key": "run-2"}) != keyed["hash"]


def test_an_event_without_a_key_has_no_such_field_so_older_chains_hash_as_before():
    h = Harness()
    run = h.ok({"type": "RequestRun", "agent_id": "a"})
    h.ok({"type": "StartRun", "run_id": run}, key="start")
    unkeyed, keyed = h.log
    assert "idempotency_key" not in unkeyed
    assert keyed["idempotency_key"] == "start"
    # A field set to null would be a different canonical form, and so a different hash
    assert compute_hash({**unkeyed, "idempotency_key": None}) != unkeyed["hash"]
    assert verify_chain("acme", h.log) == ChainVerdict(ok=True, count=2, head_hash=keyed["hash"])


def test_a_replayed_command_appends_nothing_so_the_key_is_on_the_chain_once():
    h = Harness()
    run = h.ok({"type": "RequestRun", "agent_id": "a"}, key="once")
    again = h.send({"type": "RequestRun", "agent_id": "a"}, key="once")
    assert (again["replayed"], again["aggregate_id"]) == (True, run)
    assert [e.get("idempotency_key") for e in h.log] == ["once"]


def test_a_keyed_chain_folds_back_into_the_same_state_and_validates_as_an_envelope():
    h = Harness()
    run = h.ok({"type": "RequestRun", "agent_id": "a"}, key="k-1")
    h.ok({"type": "StartRun", "run_id": run})
    rebuilt = TenantLedger("acme")
    for env in h.log:
        rebuilt.apply(env)
    assert rebuilt.chain.head_hash == h.ledger.chain.head_hash
    assert [Envelope.model_validate(dict(e)).idempotency_key for e in h.log] == ["k-1", None]
    assert [Envelope.model_validate(dict(e)).model_dump(exclude_unset=True) == dict(e) for e in h.log] == [True, True]
