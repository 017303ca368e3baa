"""RUNLEDGER_REPLICATION_FACTOR / RUNLEDGER_MIN_INSYNC_REPLICAS, validated; RUNLEDGER_PROJECTOR_REPLICA's groups."""
import pytest
from pydantic import ValidationError

from infra.adapters.settings import Settings
from projectors.runner import group_of

SECRET = "k" * 40


class Local:
    name, local = "audit", True


class Shared:
    name, local = "runs", False


def test_one_replica_by_default_and_three_with_two_in_sync_from_the_environment(monkeypatch):
    assert (Settings(jwt_secret=SECRET).replication_factor, Settings(jwt_secret=SECRET).min_insync_replicas) == (1, 1)
    monkeypatch.setenv("RUNLEDGER_REPLICATION_FACTOR", "3")
    monkeypatch.setenv("RUNLEDGER_MIN_INSYNC_REPLICAS", "2")
    settings = Settings(jwt_secret=SECRET)
    assert (settings.replication_factor, settings.min_insync_replicas) == (3, 2)


ISR, RF = "RUNLEDGER_MIN_INSYNC_REPLICAS", "RUNLEDGER_REPLICATION_FACTOR"


@pytest.mark.parametrize("rf, isr, named", [(3, 4, ISR), (1, 2, ISR), (3, 0, ISR), (0, 1, RF)])
def test_in_sync_replicas_must_be_between_one_and_the_replication_factor(rf, isr, named):
    with pytest.raises(ValidationError, match=named):
        Settings(jwt_secret=SECRET, replication_factor=rf, min_insync_replicas=isr)


def test_a_named_replica_has_groups_of_its_own_for_the_stores_it_keeps_itself_only():
    shared, replica = Settings(jwt_secret=SECRET, topic_prefix="p"), Settings(jwt_secret=SECRET, topic_prefix="p",
                                                                               projector_replica="b")
    assert [group_of(s, p) for s in (shared, replica) for p in (Local, Shared)] == [
        "p.projector.audit", "p.projector.runs", "p.projector.audit.b", "p.projector.runs"]
