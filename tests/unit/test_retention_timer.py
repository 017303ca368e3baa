"""The processor's retention timer on the in-memory event log: it sweeps what expired, never what is held."""
import uuid
from datetime import timedelta

from tests.support import command, make_settings, unique, wait_until
from tests.unit.test_processor_on_twin import Clock, answered, running, send, topic, twin

ADMIN = ("admin",)


def finished(tenant: str, run: str) -> list[dict]:
    return [command(tenant, {"type": "RequestRun", "agent_id": "a", "run_id": run}),
            command(tenant, {"type": "StartRun", "run_id": run}),
            command(tenant, {"type": "CompleteRun", "run_id": run})]


async def test_the_timer_sweeps_expired_runs_of_every_owned_tenant_and_spares_held_ones():
    settings = make_settings(retention_sweep_interval_s=0.05, timer_interval_s=0.02, partitions=2)
    log, clock = twin(settings), Clock()
    tenants = [unique("t-"), unique("t-")]
    kept, gone = str(uuid.uuid4()), {t: str(uuid.uuid4()) for t in tenants}
    setup = [c for t in tenants for c in finished(t, gone[t])] + finished(tenants[0], kept)
    setup.append(command(tenants[0], {"type": "PlaceLegalHold", "matter": "m", "reason": "r",
                                      "scope": {"kind": "run", "run_id": kept}}, roles=ADMIN))
    async with running(settings, log, clock, owning=2):
        send(log, settings, setup)
        await answered(log, settings, setup)
        clock.now += timedelta(days=91)  # past the default 90 days of operational records

        def swept():
            found = [e for e in topic(log, settings.events_topic) if e["type"] == "retention.swept"]
            return found if len(found) == 2 else None
        sweeps = await wait_until(swept, 10, "one operational sweep per tenant")
    assert sorted((e["tenant_id"], e["payload"]["record_class"], tuple(e["payload"]["run_ids"])) for e in sweeps) == \
        sorted((t, "operational", (gone[t],)) for t in tenants)
    assert {e["actor"]["subject"] for e in sweeps} == {"runledger:retention"}
    held = next(e for e in sweeps if e["tenant_id"] == tenants[0])
    assert list(held["payload"]["kept_by_holds"].values()) == [1]
