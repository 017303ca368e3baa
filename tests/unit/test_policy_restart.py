"""THROTTLE across a processor restart: a successor rebuilds the call windows from the log and gives the
same decision the first processor would have given (the in-memory event log, two processors in turn)."""
import uuid
from datetime import timedelta

from tests.support import command, make_settings, unique
from tests.unit.harness import envelope
from tests.unit.test_policy import POLICIES
from tests.unit.test_processor_on_twin import Clock, answered, running, send, twin

ADMIN = ("admin",)


def call(tenant: str, run: str) -> dict:
    return command(tenant, {"type": "RequestToolCall", "run_id": run, "tool": "mail.send", "risk_tier": "medium",
                            "params_digest": "0" * 64})


async def decided(log, settings, commands: list[dict]) -> list[tuple[str, str]]:
    replies = await answered(log, settings, commands)
    return [(r["status"], r.get("decision", {}).get("decision")) for c in commands for r in replies[c["command_id"]]]


async def test_throttle_after_a_processor_restart_is_what_the_first_processor_would_have_decided():
    settings, clock, tenant, run = make_settings(partitions=1), Clock(), unique("t"), str(uuid.uuid4())
    log = twin(settings)
    setup = [command(tenant, envelope(POLICIES, "1.2.0", "default"), roles=ADMIN),
             command(tenant, {"type": "ActivatePolicy", "policy_id": "default", "version": "1.2.0"}, roles=ADMIN),
             command(tenant, {"type": "RequestRun", "agent_id": "mailer", "run_id": run}),
             command(tenant, {"type": "StartRun", "run_id": run})]
    first = [call(tenant, run) for _ in range(2)]
    async with running(settings, log, clock, owning=1):
        send(log, settings, setup + first)
        assert [s for s, _ in await decided(log, settings, setup)] == ["accepted"] * 4
        assert await decided(log, settings, first) == [("accepted", "ALLOW"), ("accepted", "ALLOW")]
    # A successor knows only the log: the two calls 30 s ago are still in the 60 s window
    clock.now += timedelta(seconds=30)
    third = [call(tenant, run)]
    async with running(settings, log, clock, owning=1):
        send(log, settings, third)
        assert await decided(log, settings, third) == [("accepted", "THROTTLE")]
    # and once the window has passed them, a third processor allows the next call again
    clock.now += timedelta(seconds=31)
    fourth = [call(tenant, run)]
    async with running(settings, log, clock, owning=1):
        send(log, settings, fourth)
        assert await decided(log, settings, fourth) == [("accepted", "ALLOW")]
