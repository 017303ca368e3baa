"""Policy envelopes (Cedar policies + Cedar schema + SemVer version + digest) and their evaluation.

Cedar itself answers only Allow or Deny: deny by default, a satisfied `forbid` beats every
`permit`. The richer outcomes a ledger of agent work needs are carried as annotations on permit
policies (`@decision("REQUIRE_APPROVAL") @approvals("2")`, docs/policy.md) and combined
deterministically, strictest first: DENY > THROTTLE (over its limit) > REQUIRE_STEP_UP >
REQUIRE_APPROVAL > EXTERNAL > ALLOW. Every failure to decide — no envelope, one that no longer
compiles, an engine error, a policy that errors while evaluated — is a DENY with its reason.

Evaluation is a pure function of the envelope and the recorded request, so the log alone
re-derives every decision (a replay, an audit, a simulation of a draft).
"""
import functools
import hashlib
import re
from dataclasses import dataclass, field
from typing import Any

import cedarpy
import rfc8785

from domain.policy_source import (WINDOWS, PolicyRejected, Rule, Statement, check_syntax, code_only, rules,
                                  semver_key)

STRICTNESS = ("DENY", "THROTTLE", "REQUIRE_STEP_UP", "REQUIRE_APPROVAL", "EXTERNAL", "ALLOW")
MAX_POLICY_TEXT = 32 * 1024
MAX_SCHEMA_TEXT = 16 * 1024
UNKNOWN_ATTRIBUTE = re.compile(r"attribute `([^`]+)` .*not found")
RISK = {"low": 0, "medium": 1, "high": 2, "critical": 3}
# The Cedar schema of the request runledger evaluates; an envelope's own schema must describe it.
REQUEST_SCHEMA = """\
entity Agent = { subject: String, roles: Set<String> };
entity Run = { project: String, agent: String };
type ToolCall = {
  tool: String, operation?: String, risk_tier: String, risk: Long, environment?: String,
  run_cost_micros: Long, project_cost_micros: Long, budget_room_micros?: Long,
  calls_last_minute: Long, calls_last_hour: Long, calls_last_day: Long, autonomy_tier?: String,
};
action "read", "write" appliesTo { principal: Agent, resource: Run, context: ToolCall };
"""


@dataclass(frozen=True)
class PolicyEnvelope:
    policy_id: str
    version: str
    policies: str
    cedar_schema: str

    def canonical(self) -> dict[str, str]:
        """The members as PublishPolicy and policy.published name them: either recomputes the digest."""
        return {"policy_id": self.policy_id, "version": self.version, "policies": self.policies,
                "cedar_schema": self.cedar_schema}

    @property
    def digest(self) -> str:
        """SHA-256 (hex) of the RFC 8785 canonical JSON of the envelope's four members."""
        return hashlib.sha256(rfc8785.dumps(self.canonical())).hexdigest()

    @property
    def label(self) -> str:
        return f"{self.policy_id}@{self.version}"


@dataclass(frozen=True)
class Compiled:
    envelope: PolicyEnvelope
    policy_set: Any  # cedarpy.PolicySet
    schema: Any  # cedarpy.Schema
    rules: dict[str, Rule]


@dataclass(frozen=True)
class Decision:
    """What an evaluation decided and the evidence for it, as the event and the reply carry it."""
    kind: str
    reason: str
    policy_id: str | None = None
    policy_version: str | None = None
    digest: str | None = None
    determining: tuple[str, ...] = ()
    cause: str | None = None  # why a DENY: forbidden, not_permitted, fail_closed
    terms: dict = field(default_factory=dict)

    def evidence(self) -> dict[str, Any]:
        return {"decision": self.kind, "policy_id": self.policy_id, "policy_version": self.policy_version,
                "digest": self.digest, "determining": list(self.determining), "reason": self.reason,
                "cause": self.cause, "obligations": dict(self.terms)}


def validate(envelope: PolicyEnvelope) -> Compiled:
    """Compile an envelope as publishing requires, or raise PolicyRejected naming what and where."""
    semver_key(envelope.version)
    for name, text, limit in (("policies", envelope.policies, MAX_POLICY_TEXT),
                              ("cedar_schema", envelope.cedar_schema, MAX_SCHEMA_TEXT)):
        if len(text.encode()) > limit:
            raise PolicyRejected(f"{name} is {len(text.encode())} bytes; the limit is {limit}", "policy_too_large")
    try:
        schema = cedarpy.Schema.from_str(envelope.cedar_schema)
    except ValueError as error:
        raise PolicyRejected(f"schema: {error}", "policy_schema_invalid") from None
    found = check_syntax(envelope.policies)
    read = rules(envelope.policies, found)
    check_against_schema(envelope, schema, read, {s.cedar_id: s for s in found})
    compiled = Compiled(envelope, cedarpy.PolicySet.from_str(envelope.policies), schema, read)
    check_describes_requests(compiled)
    return compiled


def line_of_attribute(statement: Statement, attribute: str, default: int) -> int:
    """The line of the statement where `.attribute` (or `["attribute"]`) is first read."""
    code = code_only(statement.text)
    found = re.search(rf'\.\s*{re.escape(attribute)}\b|\[\s*"{re.escape(attribute)}"\s*\]', code)
    if found is None:
        return default
    leading = code[:len(code) - len(code.lstrip())].count("\n")
    return statement.line - leading + code.count("\n", 0, found.start())


def check_against_schema(envelope: PolicyEnvelope, schema: Any, read: dict[str, Rule],
                         texts: dict[str, Statement]) -> None:
    result = cedarpy.validate_policies(envelope.policies, schema)
    if result.validation_passed:
        return
    problems = sorted({(read[e.policy_id].line if e.policy_id in read else 0, e.policy_id, e.error)
                       for e in result.errors})
    line, cedar_id, error = problems[0]
    unknown = UNKNOWN_ATTRIBUTE.search(error)
    code = "policy_unknown_attribute" if unknown else "policy_schema_violation"
    if unknown and cedar_id in texts:
        line = line_of_attribute(texts[cedar_id], unknown.group(1), line)
    name = read[cedar_id].id if cedar_id in read else cedar_id
    text = error.replace(f"for policy `{cedar_id}`, ", "")
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    raise PolicyRejected(f"line {line}: policy `{name}`: {text}{more}", code)


def probe_requests() -> list[dict[str, Any]]:
    """A request with every optional context attribute, and one with none: the two shapes runledger sends."""
    context = {"tool": "probe", "risk_tier": "low", "risk": 0, "run_cost_micros": 0, "project_cost_micros": 0,
               "calls_last_minute": 0, "calls_last_hour": 0, "calls_last_day": 0}
    optional = {"operation": "probe", "environment": "probe", "budget_room_micros": 0, "autonomy_tier": "probe"}
    base = {"principal": {"type": "Agent", "id": "probe", "attrs": {"subject": "probe", "roles": []}},
            "action": {"type": "Action", "id": "write"},
            "resource": {"type": "Run", "id": "probe", "attrs": {"project": "probe", "agent": "probe"}}}
    return [{**base, "context": {**context, **optional}}, {**base, "context": context}]


def check_describes_requests(compiled: Compiled) -> None:
    for request in probe_requests():
        result = authorize(compiled, request)
        if result.decision == cedarpy.Decision.NoDecision:
            problem = "; ".join(result.diagnostics.errors)
            raise PolicyRejected(f"schema: it does not describe the request runledger evaluates ({problem}); "
                                 "start from the request schema in docs/policy.md", "policy_schema_mismatch")


@functools.lru_cache(maxsize=256)
def compiled_of(envelope: PolicyEnvelope) -> Compiled | str:
    """The compiled envelope, or why it no longer compiles (cached by content: evaluation stays pure)."""
    try:
        return validate(envelope)
    except PolicyRejected as error:
        return f"{error.code}: {error.reason}"
    except Exception as error:  # the engine itself failed: the caller denies
        return f"engine error: {error!r}"


def entities_of(request: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"uid": {"type": part["type"], "id": part["id"]}, "attrs": part["attrs"], "parents": []}
            for part in (request["principal"], request["resource"])]


def authorize(compiled: Compiled, request: dict[str, Any]) -> Any:
    cedar_request = {"principal": {"type": request["principal"]["type"], "id": request["principal"]["id"]},
                     "action": request["action"],
                     "resource": {"type": request["resource"]["type"], "id": request["resource"]["id"]},
                     "context": request["context"]}
    return cedarpy.is_authorized(cedar_request, compiled.policy_set, entities_of(request), schema=compiled.schema)


def evaluate(envelope: PolicyEnvelope | None, request: dict[str, Any], scope: str = "this scope") -> Decision:
    """Decide one tool call request against an envelope; every failure to decide is a DENY."""
    if envelope is None:
        return Decision("DENY", f"no policy envelope is active for {scope}: deny by default", cause="fail_closed")
    evidence = {"policy_id": envelope.policy_id, "policy_version": envelope.version, "digest": envelope.digest}
    compiled = compiled_of(envelope)
    if isinstance(compiled, str):
        return Decision("DENY", f"{envelope.label} cannot be evaluated ({compiled}): deny",
                        cause="fail_closed", **evidence)
    try:
        result = authorize(compiled, request)
    except Exception as error:
        return Decision("DENY", f"the policy engine failed ({error!r}): deny", cause="fail_closed", **evidence)
    if result.decision == cedarpy.Decision.NoDecision or result.diagnostics.errors:
        errors = "; ".join(result.diagnostics.errors)
        return Decision("DENY", f"{envelope.label} could not be evaluated ({errors}): deny",
                        cause="fail_closed", **evidence)
    matched = [compiled.rules[cedar_id] for cedar_id in result.diagnostics.reasons]
    if result.decision == cedarpy.Decision.Deny:
        return denied(matched, envelope, evidence)
    return combine(matched, request["context"], envelope, evidence)


def denied(forbids: list[Rule], envelope: PolicyEnvelope, evidence: dict) -> Decision:
    if not forbids:
        return Decision("DENY", f"no permit of {envelope.label} matched: deny by default", cause="not_permitted",
                        **evidence)
    ids = tuple(sorted(r.id for r in forbids))
    return Decision("DENY", f"forbidden by {', '.join(ids)}{said(forbids)}", cause="forbidden", determining=ids,
                    **evidence)


def said(matched: list[Rule]) -> str:
    reasons = [r.reason for r in sorted(matched, key=lambda r: r.id) if r.reason]
    return f": {'; '.join(reasons)}" if reasons else ""


def combine(permits: list[Rule], context: dict[str, Any], envelope: PolicyEnvelope, evidence: dict) -> Decision:
    """The strictest outcome among the satisfied permits; a THROTTLE under its limit permits."""
    over = [r for r in permits if r.kind == "THROTTLE" and context[WINDOWS[r.terms["window_s"]]] >= r.terms["limit"]]
    by_kind = {"THROTTLE": over, **{k: [r for r in permits if r.kind == k]
                                    for k in ("REQUIRE_STEP_UP", "REQUIRE_APPROVAL", "EXTERNAL")}}
    by_kind["ALLOW"] = [r for r in permits if r.kind == "ALLOW" or (r.kind == "THROTTLE" and r not in over)]
    kind = next(k for k in STRICTNESS[1:] if by_kind[k])
    chosen = sorted(by_kind[kind], key=lambda r: (-r.terms.get("approvals", 0), r.terms.get("limit", 0),
                                                  r.terms.get("ttl_s", 0), r.id))
    ids = tuple(sorted(r.id for r in chosen))
    terms = dict(chosen[0].terms)
    if kind == "THROTTLE":
        terms["calls_in_window"] = context[WINDOWS[terms["window_s"]]]
    return Decision(kind, f"{PHRASES[kind]} by {', '.join(ids)}{said(chosen)}", determining=ids, terms=terms,
                    **evidence)


PHRASES = {"ALLOW": "permitted", "REQUIRE_APPROVAL": "approval required", "REQUIRE_STEP_UP": "step-up required",
           "THROTTLE": "over the rate limit", "EXTERNAL": "handed to the external policy engine"}
