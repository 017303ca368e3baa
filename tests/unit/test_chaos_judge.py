"""The chaos test's judge (tests/chaos/judge.py) catches what it is there to catch.

A clean log and its answers pass; then one defect at a time is planted in a copy — an event lost, an
effect doubled, a byte changed, a reply that names the wrong event, a rejected command that left an
event, a stream that skipped or repeated one — and the judge must name exactly that kind of problem.
"""
import copy

import pytest

from schemas.envelope import GENESIS_HASH, seal
from tests.chaos.judge import judge_log, judge_streams
from tests.chaos.load import Answer
from tests.chaos.sse import Follower
from tests.unit.test_envelope import unsealed

TENANTS = ["acme", "globex"]


def log_and_answers(commands: int = 6) -> tuple[dict[str, list[dict]], list[Answer]]:
    """Per tenant, `commands` commands of two events each, sealed into one chain, and their 200 answers."""
    chains, answers = {}, []
    for tenant in TENANTS:
        chain: list[dict] = []
        for c in range(commands):
            told = []
            for _ in range(2):
                seq = len(chain) + 1
                env = seal({**unsealed(seq, chain[-1]["hash"] if chain else GENESIS_HASH, note=f"{tenant} {seq}"),
                            "tenant_id": tenant, "command_id": f"{tenant}-c{c}", "event_id": f"{tenant}-e{seq}"})
                chain.append(env)
                told.append({"chain_seq": seq, "hash": env["hash"], "event_id": env["event_id"]})
            answers.append(Answer(tenant, f"{tenant}-k{c}", "StartStep", 200,
                                  {"command_id": f"{tenant}-c{c}", "events": told}, 0.0, 0.0, 1))
        chains[tenant] = chain
    return chains, answers


def found(problems: dict[str, list]) -> set[str]:
    return {kind for kind, items in problems.items() if items}


def reseal_from(chain: list[dict], start: int) -> None:
    """Re-seal chain[start:] so that each links to the one before it (a defect that keeps the chain whole)."""
    for i in range(start, len(chain)):
        fields = {k: v for k, v in chain[i].items() if k != "hash"}
        fields["prev_hash"] = chain[i - 1]["hash"] if i else GENESIS_HASH
        chain[i] = seal(fields)


def test_a_clean_log_passes():
    chains, answers = log_and_answers()
    assert found(judge_log(chains, TENANTS, answers, [])) == set()


def test_a_lost_event_is_caught():
    chains, answers = log_and_answers()
    del chains["acme"][4]  # the third command's first event
    assert found(judge_log(chains, TENANTS, answers, [])) == {
        "not_gapless", "chain_broken", "ack_not_in_log", "ack_events_not_once"}


def test_a_lost_tail_is_caught_even_though_the_rest_is_a_valid_chain():
    chains, answers = log_and_answers()
    del chains["globex"][-2:]  # the last command's two events: what is left is gapless and verifies
    problems = judge_log(chains, TENANTS, answers, [])
    assert found(problems) == {"ack_not_in_log", "ack_events_not_once"}
    assert problems["ack_not_in_log"] == [("globex", "globex-k5", 11), ("globex", "globex-k5", 12)]


def test_a_doubled_effect_is_caught():
    """The same command decided twice: its events appended again at the chain's end, properly linked."""
    chains, answers = log_and_answers()
    chain = chains["acme"]
    for original in chain[0:2]:
        again = {k: v for k, v in original.items() if k != "hash"}
        again.update(chain_seq=len(chain) + 1, event_id=f"again-{original['event_id']}",
                     prev_hash=chain[-1]["hash"])
        chain.append(seal(again))
    problems = judge_log(chains, TENANTS, answers, [])
    assert found(problems) == {"ack_events_not_once", "unclaimed_events"}
    assert problems["unclaimed_events"] == [("acme", 13, "run.started"), ("acme", 14, "run.started")]


def test_a_changed_byte_is_caught():
    chains, answers = log_and_answers()
    chains["globex"][6]["payload"]["note"] = "globex 7!"
    assert "chain_broken" in found(judge_log(chains, TENANTS, answers, []))


def test_a_resealed_history_is_caught_by_the_answers():
    """A rewritten event re-sealed with the chain re-linked after it verifies as a chain; the answers differ."""
    chains, answers = log_and_answers()
    chains["acme"][3]["payload"]["note"] = "rewritten"
    reseal_from(chains["acme"], 3)
    problems = judge_log(chains, TENANTS, answers, [])
    assert found(problems) == {"ack_hash_differs"}
    assert [seq for _, _, seq in problems["ack_hash_differs"]] == list(range(4, 13))


def test_an_answer_naming_the_wrong_event_is_caught():
    chains, answers = log_and_answers()
    answers[1].body["events"][0] = copy.deepcopy(answers[0].body["events"][0])  # k1 claims k0's first event
    problems = judge_log(chains, TENANTS, answers, [])
    assert found(problems) == {"ack_hash_differs", "claimed_twice", "unclaimed_events"}
    assert problems["claimed_twice"] == [("acme", 1)]
    assert problems["unclaimed_events"] == [("acme", 3, "run.started")]


def test_a_seq_twice_is_caught():
    chains, answers = log_and_answers()
    chains["acme"].insert(5, copy.deepcopy(chains["acme"][4]))
    assert {"not_gapless", "seq_twice", "chain_broken"} <= found(judge_log(chains, TENANTS, answers, []))


def test_a_rejected_command_that_left_an_event_is_caught():
    chains, answers = log_and_answers()
    rejected = Answer("globex", "globex-k2", "StartStep", 409, {"command_id": "globex-c2", "code": "conflict"},
                      0.0, 0.0, 1)
    accepted = [a for a in answers if a.key != "globex-k2"]
    problems = judge_log(chains, TENANTS, accepted, [rejected])
    assert found(problems) == {"unclaimed_events", "rejected_in_log"}
    assert problems["rejected_in_log"] == [("globex", "globex-k2")]


def test_a_replayed_answer_is_judged_by_its_original_command():
    chains, answers = log_and_answers()
    replay = copy.deepcopy(answers[2])
    replay.body.update(command_id="acme-retry", original_command_id="acme-c2")
    assert found(judge_log(chains, TENANTS, [*answers, replay], [])) == {"claimed_twice"}
    replay.body.pop("original_command_id")
    assert "ack_hash_differs" in found(judge_log(chains, TENANTS, [*answers, replay], []))


def follower(tenant: str, seqs: list[int]) -> Follower:
    f = Follower(tenant, [])
    f.received = [(i, seq, 0.0) for i, seq in enumerate(seqs, 1)]
    return f


@pytest.mark.parametrize("seqs, kinds", [
    (list(range(1, 13)), set()),
    ([s for s in range(1, 13) if s != 7], {"chain_seqs_not_the_chain"}),  # a gap: ids stay 1..n
    ([*range(1, 8), 7, *range(8, 13)], {"chain_seqs_not_the_chain"}),     # a duplicate
    ([*range(1, 7), 8, 7, *range(9, 13)], {"chain_seqs_not_the_chain"}),  # out of order
    (list(range(1, 12)), {"chain_seqs_not_the_chain"}),                   # the last one missed
])
def test_the_streams_judge_catches_gaps_duplicates_and_disorder(seqs, kinds):
    chains, _ = log_and_answers()
    assert found(judge_streams(chains, [follower("acme", seqs), follower("globex", list(range(1, 13)))])) == kinds


def test_the_streams_judge_catches_ids_that_skip_or_repeat_and_notices():
    chains, _ = log_and_answers()
    skipped = follower("acme", list(range(1, 13)))
    skipped.received[5] = (7, 6, 0.0)
    noticed = follower("globex", list(range(1, 13)))
    noticed.notices.append(("replay_incomplete", "{}"))
    problems = judge_streams(chains, [skipped, noticed])
    assert found(problems) == {"ids_not_1_to_n", "notices"}
    assert problems["notices"] == [("globex", "replay_incomplete", "{}")]
