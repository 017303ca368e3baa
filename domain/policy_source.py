"""Reading an envelope's Cedar text: SemVer versions, policies by source line, runledger's annotations.

Cedar's parser names neither a line nor a policy when it refuses a text, and names a policy only
by its position (`policy0`, `policy1`, …) when the validator refuses one. An author needs the
line: the text is split here into its statements (at each `;` outside string literals and `//`
comments, as Cedar reads it) so that the n-th statement is `policy<n>` and each has a first line.
"""
import json
import re
from dataclasses import dataclass, field
from typing import Annotated

import cedarpy
from pydantic import AfterValidator, StringConstraints

from domain.errors import InvalidCommand
from domain.text import storable

SEMVER = re.compile(r"(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
                    r"(?:-((?:0|[1-9]\d*|\d*[A-Za-z-][0-9A-Za-z-]*)(?:\.(?:0|[1-9]\d*|\d*[A-Za-z-][0-9A-Za-z-]*))*))?"
                    r"(?:\+([0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?")
DECISION_KINDS = ("ALLOW", "REQUIRE_APPROVAL", "REQUIRE_STEP_UP", "THROTTLE", "EXTERNAL")
WINDOWS = {60: "calls_last_minute", 3600: "calls_last_hour", 86400: "calls_last_day"}
ANNOTATIONS = {  # annotation → the decision kinds whose permits may carry it ("*": any policy)
    "id": "*", "reason": "*", "decision": DECISION_KINDS, "approvals": ("REQUIRE_APPROVAL",),
    "approver_role": ("REQUIRE_APPROVAL",), "step_up": ("REQUIRE_STEP_UP",), "max_age_s": ("REQUIRE_STEP_UP",),
    "limit": ("THROTTLE",), "window_s": ("THROTTLE",), "ttl_s": ("EXTERNAL",),
}
DEFAULT_APPROVER_ROLE = "approver"
DEFAULT_STEP_UP_AGE_S = 300
DEFAULT_EXTERNAL_TTL_S = 300
ROLE = re.compile(r"[A-Za-z0-9_.:-]{1,100}")
# Cedar text as a command carries it (the body limit bounds both members together).
PolicyText = Annotated[str, StringConstraints(min_length=1, max_length=32 * 1024), AfterValidator(storable)]


class PolicyRejected(InvalidCommand):
    """An envelope refused at publish; the code says what is wrong and the reason names the line."""
    code = "invalid_policy"


def semver_key(version: str) -> tuple:
    """SemVer 2.0.0 precedence as a sortable key (build metadata does not count)."""
    found = SEMVER.fullmatch(version)
    if found is None:
        raise PolicyRejected(f"version {version[:60]!r} is not a SemVer version (MAJOR.MINOR.PATCH, e.g. 1.4.0)",
                             "policy_version_invalid")
    core = tuple(int(part) for part in found.groups()[:3])
    if found.group(4) is None:
        return core + ((1,),)
    parts = tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in found.group(4).split("."))
    return core + ((0,) + parts,)


@dataclass(frozen=True)
class Statement:
    cedar_id: str
    line: int
    text: str


def code_only(text: str) -> str:
    """The text with every `//` comment blanked out (same length, same lines); string literals kept."""
    out, quoted, escaped, i = list(text), False, False, 0
    while i < len(text):
        char = text[i]
        if quoted:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                quoted = False
        elif char == '"':
            quoted = True
        elif text.startswith("//", i):
            end = text.find("\n", i)
            end = len(text) if end < 0 else end
            out[i:end] = " " * (end - i)
            i = end
            continue
        i += 1
    return "".join(out)


def statements(text: str) -> tuple[list[Statement], tuple[int, str] | None]:
    """The policies of a Cedar text, each with its first line; and (line, text) of anything after the last `;`."""
    code = code_only(text)
    found, start, quoted, escaped = [], 0, False, False
    for i, char in enumerate(code):
        if quoted:
            escaped, quoted = (False, True) if escaped else (char == "\\", char != '"')
        elif char == '"':
            quoted = True
        elif char == ";":
            found.append(Statement(f"policy{len(found)}", first_line(code, start), text[start:i + 1]))
            start = i + 1
    rest = code[start:].strip()
    return found, ((first_line(code, start), rest) if rest else None)


def first_line(code: str, start: int) -> int:
    """The 1-based line of the first character at or after start that is not blank."""
    skipped = len(code[start:]) - len(code[start:].lstrip())
    return code.count("\n", 0, start + skipped) + 1


def check_syntax(text: str) -> list[Statement]:
    """Each statement parses alone, else a policy_syntax_error naming its first line."""
    found, rest = statements(text)
    for statement in found:
        try:
            cedarpy.PolicySet.from_str(statement.text)
        except ValueError as error:
            raise PolicyRejected(f"line {statement.line}: {error}", "policy_syntax_error") from None
    if rest is not None:
        raise PolicyRejected(f"line {rest[0]}: a policy does not end with ';' ({rest[1][:60]!r})", "policy_syntax_error")
    if not found:
        raise PolicyRejected("the envelope has no policy: write at least one permit (deny is the default)",
                             "policy_syntax_error")
    try:
        cedarpy.PolicySet.from_str(text)
    except ValueError as error:
        raise PolicyRejected(f"line {found[0].line}: {error}", "policy_syntax_error") from None
    return found


@dataclass(frozen=True)
class Rule:
    """One Cedar policy with its runledger meaning, read from its annotations."""
    cedar_id: str
    id: str
    line: int
    effect: str
    kind: str = "ALLOW"
    reason: str | None = None
    terms: dict = field(default_factory=dict)


def rules(text: str, found: list[Statement]) -> dict[str, Rule]:
    """Every policy as a Rule by its Cedar id, or policy_annotation_invalid naming its line."""
    parsed = json.loads(cedarpy.policies_to_json_str(text))["staticPolicies"]
    lines = {s.cedar_id: s.line for s in found}
    read = {cedar_id: rule_of(cedar_id, lines[cedar_id], body) for cedar_id, body in parsed.items()}
    seen: dict[str, Rule] = {}
    for rule in sorted(read.values(), key=lambda r: r.line):
        if rule.id in seen:
            annotation_error(rule.line, rule.id, f"repeats the @id of the policy at line {seen[rule.id].line}")
        seen[rule.id] = rule
    return read


def annotation_error(line: int, policy: str, problem: str):
    raise PolicyRejected(f"line {line}: policy `{policy}` {problem}", "policy_annotation_invalid")


def rule_of(cedar_id: str, line: int, body: dict) -> Rule:
    notes: dict[str, str] = body.get("annotations", {})
    policy = notes.get("id") or ""
    if not policy.strip():
        annotation_error(line, cedar_id, "has no @id(\"…\"): every policy needs one, so decisions can name it")
    effect = body["effect"]
    kind = "DENY" if effect == "forbid" else notes.get("decision", "ALLOW")
    if effect == "permit" and kind not in DECISION_KINDS:
        annotation_error(line, policy, f"has @decision({kind!r}); it must be one of {', '.join(DECISION_KINDS)}")
    if effect == "forbid" and "decision" in notes:
        annotation_error(line, policy, "is a forbid with a @decision: a forbid always denies")
    for name in notes:
        allowed = ANNOTATIONS.get(name)
        if allowed is None:
            annotation_error(line, policy, f"has an unknown annotation @{name}; known: "
                                           f"{', '.join('@' + a for a in ANNOTATIONS)}")
        if allowed != "*" and (effect == "forbid" or kind not in allowed):
            annotation_error(line, policy, f"has @{name}, which only a permit with @decision"
                                           f"({' or '.join(allowed)}) may carry")
    return Rule(cedar_id, policy, line, effect, kind, notes.get("reason"), terms_of(kind, notes, line, policy))


def number(notes: dict, name: str, line: int, policy: str, low: int, high: int, default: int | None = None) -> int:
    text = notes.get(name)
    if text is None and default is not None:
        return default
    if text is None or not text.isascii() or not text.isdigit() or not low <= int(text) <= high:
        annotation_error(line, policy, f"needs @{name}(\"N\") with N a whole number from {low} to {high}")
    return int(text)


def terms_of(kind: str, notes: dict, line: int, policy: str) -> dict:
    """The obligations a permit of this kind sets: approvers, step-up, rate, deadline."""
    if kind == "REQUIRE_APPROVAL":
        role = notes.get("approver_role", DEFAULT_APPROVER_ROLE)
        if not ROLE.fullmatch(role):
            annotation_error(line, policy, f"has @approver_role({role[:40]!r}), which is not a role name")
        return {"approvals": number(notes, "approvals", line, policy, 1, 2), "approver_role": role}
    if kind == "REQUIRE_STEP_UP":
        step_up = notes.get("step_up", "")
        if not ROLE.fullmatch(step_up):
            annotation_error(line, policy, "needs @step_up(\"kind\") naming the authentication, e.g. webauthn")
        return {"step_up": step_up,
                "max_age_s": number(notes, "max_age_s", line, policy, 1, 3600, DEFAULT_STEP_UP_AGE_S)}
    if kind == "THROTTLE":
        window = number(notes, "window_s", line, policy, 60, 86400)
        if window not in WINDOWS:
            annotation_error(line, policy, f"has @window_s(\"{window}\"); a window is one of "
                                           f"{', '.join(map(str, WINDOWS))} seconds")
        return {"limit": number(notes, "limit", line, policy, 1, 1_000_000), "window_s": window}
    if kind == "EXTERNAL":
        return {"ttl_s": number(notes, "ttl_s", line, policy, 1, 86400, DEFAULT_EXTERNAL_TTL_S)}
    return {}
