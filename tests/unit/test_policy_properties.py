"""Property: for random envelopes and random requests, the log alone re-derives every recorded decision."""
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from domain.ledger import TenantLedger
from domain.policy import PolicyEnvelope, evaluate
from tests.unit.harness import Harness

TOOLS = ("search", "shell", "mail.send", "db.drop_table")
EVIDENCE = ("decision", "policy_id", "policy_version", "digest", "determining", "reason", "cause", "obligations")


@st.composite
def rule(draw, index: int) -> str:
    effect = draw(st.sampled_from(["permit"] * 4 + ["forbid"]))
    conditions = draw(st.lists(st.sampled_from([
        f"context.risk >= {draw(st.integers(0, 3))}", f"context.risk < {draw(st.integers(1, 4))}",
        f'context.tool == "{draw(st.sampled_from(TOOLS))}"', 'action == Action::"write"',
        f"context.calls_last_minute < {draw(st.integers(0, 3))}", 'principal.roles.contains("operator")',
    ]), max_size=2))
    notes = ""
    if effect == "permit":
        kind = draw(st.sampled_from(["ALLOW", "REQUIRE_APPROVAL", "REQUIRE_STEP_UP", "THROTTLE", "EXTERNAL"]))
        notes = {"ALLOW": "", "REQUIRE_APPROVAL": f'@decision("REQUIRE_APPROVAL") @approvals("{draw(st.integers(1, 2))}")',
                 "REQUIRE_STEP_UP": '@decision("REQUIRE_STEP_UP") @step_up("webauthn")',
                 "THROTTLE": f'@decision("THROTTLE") @limit("{draw(st.integers(1, 3))}") @window_s("60")',
                 "EXTERNAL": '@decision("EXTERNAL")'}[kind]
    when = f" when {{ {' && '.join(conditions)} }}" if conditions else ""
    return f'@id("r{index}") {notes}\n{effect}(principal, action, resource){when};'


@st.composite
def policies(draw) -> str:
    count = draw(st.integers(1, 4))
    return "\n".join(draw(rule(i)) for i in range(count))


steps = st.lists(st.one_of(
    st.tuples(st.just("call"), st.sampled_from(TOOLS), st.sampled_from(["low", "medium", "high", "critical"]),
              st.sampled_from(["read", "write"])),
    st.tuples(st.just("wait"), st.integers(0, 90)),
    st.tuples(st.just("publish"), policies()),
), min_size=1, max_size=12)


def play(h: Harness, script: list) -> None:
    version = 0
    for step in script:
        if step[0] == "call":
            h.request_call(h.run, risk=step[2], tool=step[1], access=step[3])
        elif step[0] == "wait":
            h.advance(step[1])
        else:
            version += 1
            h.activate(step[1], f"{version}.0.0", "random")


def envelopes_on(log: list[dict]) -> dict[tuple[str, str], PolicyEnvelope]:
    return {(p["policy_id"], p["version"]): PolicyEnvelope(p["policy_id"], p["version"], p["policies"],
                                                           p["cedar_schema"])
            for p in (e["payload"] for e in log if e["type"] == "policy.published")}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(first=policies(), script=steps, probe=st.tuples(st.sampled_from(TOOLS), st.sampled_from(["low", "high"])))
def test_replaying_the_log_yields_the_recorded_decisions(first, script, probe):
    h = Harness()
    h.activate(first, "0.1.0", "random")
    h.run = h.running_run()
    play(h, script)
    # Each recorded decision re-evaluates from the log alone: its request and the envelope published on the chain
    envelopes = envelopes_on(h.log)
    for decided in (e["payload"] for e in h.log if e["type"] == "tool_call.policy_decided"):
        envelope = envelopes[(decided["policy_id"], decided["policy_version"])]
        assert evaluate(envelope, decided["request"]).evidence() == {k: decided[k] for k in EVIDENCE}
    # And a processor rebuilt from the log decides the next call exactly as the one that wrote it
    rebuilt = Harness()
    rebuilt.now, rebuilt.run, rebuilt.ledger = h.now, h.run, TenantLedger("acme")
    for env in h.log:
        rebuilt.ledger.apply(env)
    nexts = [harness.request_call(h.run, risk=probe[1], tool=probe[0])["decision"] for harness in (h, rebuilt)]
    assert {k: nexts[0][k] for k in EVIDENCE} == {k: nexts[1][k] for k in EVIDENCE}
