"""The policy engine alone: envelopes validated at publish, decisions evaluated from a request."""
import hashlib

import pytest
import rfc8785

from domain.policy import REQUEST_SCHEMA, PolicyEnvelope, evaluate, probe_requests, validate
from domain.policy_source import PolicyRejected, semver_key, statements

POLICIES = """// the demo tenant's rules
@id("allow-low") @reason("low risk needs no one")
permit(principal, action, resource) when { context.risk < 2 };

@id("two-person-high")
@decision("REQUIRE_APPROVAL") @approvals("2") @approver_role("approver")
permit(principal, action == Action::"write", resource) when { context.risk >= 2 };

@id("step-up-admin") @decision("REQUIRE_STEP_UP") @step_up("webauthn")
permit(principal, action, resource) when { context.tool == "iam.grant" };

@id("mail-rate") @decision("THROTTLE") @limit("2") @window_s("60")
permit(principal, action, resource) when { context.tool == "mail.send" };

@id("opa") @decision("EXTERNAL") @ttl_s("120")
permit(principal, action, resource) when { context.tool == "payments.refund" };

@id("no-drop")
forbid(principal, action, resource) when { context.tool == "db.drop_table" };
"""
ENVELOPE = PolicyEnvelope("default", "1.2.0", POLICIES, REQUEST_SCHEMA)


def request(tool: str = "search", risk: str = "low", access: str = "write", **context) -> dict:
    base = probe_requests()[1]
    levels = {"low": 0, "medium": 1, "high": 2, "critical": 3}
    return {**base, "action": {"type": "Action", "id": access},
            "context": {**base["context"], "tool": tool, "risk_tier": risk, "risk": levels[risk], **context}}


def refused(policies: str, schema: str = REQUEST_SCHEMA, version: str = "1.0.0") -> tuple[str, str]:
    with pytest.raises(PolicyRejected) as caught:
        validate(PolicyEnvelope("p", version, policies, schema))
    return caught.value.code, caught.value.reason


def test_the_digest_is_sha256_of_the_canonical_json_of_the_four_members():
    members = {"policy_id": "default", "version": "1.2.0", "policies": POLICIES, "cedar_schema": REQUEST_SCHEMA}
    assert ENVELOPE.digest == hashlib.sha256(rfc8785.dumps(members)).hexdigest()
    assert PolicyEnvelope("default", "1.2.1", POLICIES, REQUEST_SCHEMA).digest != ENVELOPE.digest


def test_no_envelope_denies_by_default():
    decision = evaluate(None, request(), "the tenant")
    assert (decision.kind, decision.cause, decision.policy_id, decision.reason) == (
        "DENY", "fail_closed", None, "no policy envelope is active for the tenant: deny by default")


@pytest.mark.parametrize("call,kind,determining,terms", [
    (request(), "ALLOW", ("allow-low",), {}),
    (request(risk="high"), "REQUIRE_APPROVAL", ("two-person-high",), {"approvals": 2, "approver_role": "approver"}),
    (request("iam.grant", "high"), "REQUIRE_STEP_UP", ("step-up-admin",), {"step_up": "webauthn", "max_age_s": 300}),
    (request("mail.send", "medium", calls_last_minute=1), "ALLOW", ("allow-low", "mail-rate"), {}),
    (request("mail.send", "medium", calls_last_minute=2), "THROTTLE", ("mail-rate",),
     {"limit": 2, "window_s": 60, "calls_in_window": 2}),
    (request("mail.send", "high", calls_last_minute=2), "THROTTLE", ("mail-rate",),
     {"limit": 2, "window_s": 60, "calls_in_window": 2}),
    (request("payments.refund", "medium"), "EXTERNAL", ("opa",), {"ttl_s": 120}),
    (request("db.drop_table"), "DENY", ("no-drop",), {}),
    (request("search", "high", access="read"), "DENY", (), {}),
])
def test_each_decision_kind_is_reached_by_a_policy_with_its_evidence(call, kind, determining, terms):
    decision = evaluate(ENVELOPE, call)
    assert (decision.kind, decision.determining, decision.terms) == (kind, determining, terms)
    assert (decision.policy_id, decision.policy_version, decision.digest) == ("default", "1.2.0", ENVELOPE.digest)


def test_forbid_beats_every_permit_and_the_reason_quotes_the_policy():
    decision = evaluate(ENVELOPE, request("db.drop_table", "high"))
    assert (decision.kind, decision.cause, decision.reason) == ("DENY", "forbidden", "forbidden by no-drop")
    assert evaluate(ENVELOPE, request()).reason == "permitted by allow-low: low risk needs no one"


def test_a_request_the_schema_does_not_describe_is_denied_not_decided():
    odd = request()
    odd["context"]["surprise"] = 1
    decision = evaluate(ENVELOPE, odd)
    assert (decision.kind, decision.cause) == ("DENY", "fail_closed")
    assert "surprise" in decision.reason


def test_an_envelope_that_no_longer_compiles_denies():
    broken = PolicyEnvelope("default", "9.0.0", "permit(principal, action, resource);", REQUEST_SCHEMA)
    decision = evaluate(broken, request())
    assert (decision.kind, decision.cause, decision.digest) == ("DENY", "fail_closed", broken.digest)
    assert decision.reason.startswith("default@9.0.0 cannot be evaluated (policy_annotation_invalid: line 1:")


@pytest.mark.parametrize("policies,code,where", [
    (POLICIES.replace('action == Action::"write"', 'action = Action::"write"'), "policy_syntax_error", "line 5:"),
    (POLICIES + '\n@id("late")\npermit(principal, action, resource)', "policy_syntax_error", "line 21:"),
    (POLICIES + '\n@id("nope")\npermit(principal, action, resource)\n  when { context.autonomy == "full" };',
     "policy_unknown_attribute", "line 23: policy `nope`: attribute `autonomy`"),
    (POLICIES + '\n@id("typed")\npermit(principal, action, resource) when { context.tool > 3 };',
     "policy_schema_violation", "line 21: policy `typed`:"),
    (POLICIES.replace('@approvals("2")', '@aprovals("2")'), "policy_annotation_invalid",
     "line 5: policy `two-person-high` has an unknown annotation @aprovals"),
    (POLICIES.replace('@approvals("2")', '@approvals("3")'), "policy_annotation_invalid",
     "line 5: policy `two-person-high` needs @approvals"),
    (POLICIES.replace('@window_s("60")', '@window_s("90")'), "policy_annotation_invalid", "line 12:"),
    (POLICIES.replace('@id("no-drop")', ''), "policy_annotation_invalid", "line 19: policy `policy5` has no @id"),
    (POLICIES.replace('@id("opa")', '@id("mail-rate")'), "policy_annotation_invalid",
     "line 15: policy `mail-rate` repeats the @id of the policy at line 12"),
    ('@id("f") @decision("THROTTLE") forbid(principal, action, resource);', "policy_annotation_invalid",
     "line 1: policy `f` is a forbid with a @decision"),
])
def test_a_bad_envelope_is_refused_naming_the_line(policies, code, where):
    found_code, reason = refused(policies)
    assert (found_code, reason[:len(where)]) == (code, where)


def test_a_schema_that_does_not_describe_the_request_is_refused():
    required_room = REQUEST_SCHEMA.replace("budget_room_micros?", "budget_room_micros")
    assert refused(POLICIES, required_room)[0] == "policy_schema_mismatch"
    assert refused(POLICIES, "entity Agent {")[0] == "policy_schema_invalid"


@pytest.mark.parametrize("version", ["1", "1.0", "01.0.0", "1.0.0.0", "v1.0.0", ""])
def test_a_version_must_be_semver(version):
    assert refused(POLICIES, version=version)[0] == "policy_version_invalid"


def test_semver_precedence_orders_pre_releases_below_their_release():
    ordered = ["1.0.0-alpha", "1.0.0-alpha.1", "1.0.0-alpha.beta", "1.0.0-beta", "1.0.0-beta.2", "1.0.0-beta.11",
               "1.0.0-rc.1", "1.0.0", "1.0.1", "1.10.0", "2.0.0"]
    assert sorted(ordered, key=semver_key) == ordered
    assert semver_key("1.0.0+build.5") == semver_key("1.0.0")


def test_statements_skip_semicolons_in_strings_and_comments():
    found, rest = statements('@id("a;b") permit(principal, action, resource); // x; y\n\n'
                             '@id("c") // z;\nforbid(principal, action, resource);\n// the end;\n')
    assert ([(s.cedar_id, s.line) for s in found], rest) == ([("policy0", 1), ("policy1", 3)], None)
