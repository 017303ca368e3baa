"""A command whose deciding raises a defect (not a domain rejection) is refused once, and never costs
another tenant of its batch anything: no gap, no lost command, no half-applied state."""
import uuid

import pytest

from domain import handlers
from domain.commands import StartRun
from infra.adapters.http.errors import status_of_code
from schemas.chain import ChainVerdict, verify_chain
from tests.integration.test_processor import outcomes_for, run_lifecycle, running_processor
from tests.support import command, events, make_settings, produce_commands, unique


@pytest.fixture
def start_run_breaks_for():
    """StartRun raises a KeyError (a stand-in for a defect) for one tenant, after changing its run."""
    original = handlers.HANDLERS[StartRun]
    broken: set[str] = set()

    def start_run(cmd, ctx):
        result = original[0](cmd, ctx)
        if ctx.tenant_id in broken:
            raise KeyError("a defect after the state changed")
        return result
    handlers.HANDLERS[StartRun] = (start_run, original[1])
    try:
        yield broken
    finally:
        handlers.HANDLERS[StartRun] = original


async def test_a_defect_refuses_its_command_once_and_the_rest_of_its_batch_commits(start_run_breaks_for):
    settings = make_settings(partitions=1)
    a, b = unique("tenant-a"), unique("tenant-b")
    start_run_breaks_for.add(a)
    run_a, run_b = str(uuid.uuid4()), str(uuid.uuid4())
    # Given one batch on one partition: A's lifecycle (its StartRun hits the defect) interleaved with B's
    sent = [c for pair in zip(run_lifecycle(a, run_a), run_lifecycle(b, run_b)) for c in pair]
    sent.append(command(a, {"type": "CancelRun", "run_id": run_a, "reason": "gave up"}))
    async with running_processor(settings) as processor:
        await produce_commands(settings, sent)
        outcomes = await outcomes_for(settings, sent)
    by_id = {c["command_id"]: (c["tenant_id"], c["body"]["type"]) for c in sent}
    answers = {by_id[i]: (o["status"], o.get("code")) for i, o in outcomes.items() if i in by_id}
    # Then A's StartRun is refused as undecidable; A's later StartStep finds the run still requested
    assert answers == {(a, "RequestRun"): ("accepted", None), (a, "StartRun"): ("rejected", "undecidable"),
                       (a, "StartStep"): ("rejected", "invalid_state"), (a, "CancelRun"): ("accepted", None),
                       (b, "RequestRun"): ("accepted", None), (b, "StartRun"): ("accepted", None),
                       (b, "StartStep"): ("accepted", None)}
    assert [(status_of_code(o["code"]), "http_status" in o)
            for i, o in outcomes.items() if by_id.get(i) == (a, "StartRun")] == [(500, False)]
    assert processor.stats["undecidable"] == 1
    # And both chains are gapless and hold exactly the accepted commands' events
    log = await events(settings)
    for tenant, types in ((a, ["run.requested", "run.cancelled"]),
                          (b, ["run.requested", "run.started", "run.step_started"])):
        chain = [e for e in log if e["tenant_id"] == tenant]
        assert [e["type"] for e in chain] == types
        assert verify_chain(tenant, chain) == ChainVerdict(True, len(types), chain[-1]["hash"])
