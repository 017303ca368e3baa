"""What a command's reply says about policy, read from the events it appended.

An agent learns from the reply to RequestToolCall whether to proceed, and on whose authority;
an admin learns the digest of what it published. The reply repeats the events, never adds to them.
"""
from typing import Any

DECISION_FIELDS = ("decision", "policy_id", "policy_version", "digest", "determining", "reason", "cause",
                   "obligations", "source", "evaluated_at", "bundle_revision")


POLICY_TYPES = frozenset({"tool_call.policy_decided", "tool_call.violation_recorded", "policy.published",
                          "policy.activated"})  # the event types `policy_outcome` reads; any other gives {}


def bears_on_policy(envelopes: list[dict[str, Any]]) -> bool:
    """Whether `policy_outcome(envelopes)` says anything (is not {})."""
    for env in envelopes:
        if env["type"] in POLICY_TYPES:
            return True
    return False


def policy_outcome(envelopes: list[dict[str, Any]]) -> dict[str, Any]:
    outcome: dict[str, Any] = {}
    for env in envelopes:
        payload = env["payload"]
        if env["type"] == "tool_call.policy_decided":
            outcome["decision"] = {"tool_call_id": env["aggregate_id"],
                                   **{k: payload.get(k) for k in DECISION_FIELDS}}
        elif env["type"] == "tool_call.violation_recorded":
            outcome.setdefault("decision", {})["violation_recorded"] = True
        elif env["type"] in ("policy.published", "policy.activated"):
            outcome["policy"] = {k: payload.get(k) for k in ("policy_id", "version", "digest", "project",
                                                             "environment") if k in payload}
    return outcome
