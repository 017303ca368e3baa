"""The policy benchmark (bench/policy/README.md): what evaluating an envelope costs a tool call.

One process, no broker, no database: the engine alone (domain/policy.py `evaluate`), and the
whole decision of a RequestToolCall in a TenantLedger with the envelope active against the same
command with none active (which denies without calling Cedar), so the difference is Cedar's share.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import traceback
from datetime import datetime, timezone
from pathlib import Path

from bench.evidence.timing import once, timed
from bench.lib import cli, host
from bench.lib.report import Report
from domain.ledger import TenantLedger
from domain.policy import REQUEST_SCHEMA, PolicyEnvelope, evaluate, probe_requests, validate
from infra.entry.demo_policy import POLICIES

log = cli.logger("bench policy")
SIZES: cli.Sizes = {"full": {"duration": 3.0}, "quick": {"duration": 2.0}, "smoke": {"duration": 0.2}}
TARGET_US = 200  # ours: a processor decides a few thousand commands/s (docs/bench.md); 200 µs is a tenth of that
ENVELOPE = PolicyEnvelope("tools-default", "1.0.0", POLICIES, REQUEST_SCHEMA)
TOOLS = [("kb.search", "low", 0), ("payments.refund", "high", 2), ("db.drop_table", "critical", 3)]
ADMIN = {"subject": "root", "roles": ["admin"]}
OPERATOR = {"subject": "agent-1", "roles": ["operator"]}


def requests() -> list[dict]:
    base = probe_requests()[1]
    return [{**base, "context": {**base["context"], "tool": tool, "risk_tier": tier, "risk": risk}}
            for tool, tier, risk in TOOLS]


def command(ledger: TenantLedger, body: dict, actor: dict, now: datetime) -> dict:
    digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
    reply, _ = ledger.execute({"command_id": digest, "tenant_id": ledger.tenant_id, "idempotency_key": None,
                               "actor": actor, "body": body, "request_digest": digest}, now)
    return reply


def running_ledger(with_policy: bool) -> tuple[TenantLedger, str, datetime]:
    ledger, now = TenantLedger("bench"), datetime(2026, 11, 22, 12, tzinfo=timezone.utc)
    if with_policy:
        command(ledger, {"type": "PublishPolicy", "policy_id": "tools-default", "version": "1.0.0",
                         "policies": POLICIES, "cedar_schema": REQUEST_SCHEMA}, ADMIN, now)
        command(ledger, {"type": "ActivatePolicy", "policy_id": "tools-default", "version": "1.0.0"}, ADMIN, now)
    run = command(ledger, {"type": "RequestRun", "agent_id": "bench-bot"}, OPERATOR, now)["aggregate_id"]
    command(ledger, {"type": "StartRun", "run_id": run}, OPERATOR, now)
    return ledger, run, now


def decide(with_policy: bool, duration: float):
    ledger, run, now = running_ledger(with_policy)

    def one(i: int) -> None:
        tool, tier, _ = TOOLS[i % len(TOOLS)]
        command(ledger, {"type": "RequestToolCall", "run_id": run, "tool": tool, "risk_tier": tier,
                         "params_digest": f"{i:064x}"}, OPERATOR, now)
    return timed(one, duration, "commands")


def per_us(t) -> float:
    return t.window.seconds / t.window.count * 1e6


def run(args: argparse.Namespace) -> Report:
    report = Report()
    if note := host.busy_note():
        report.notes.append(note)
    _, seconds = once(lambda: validate(PolicyEnvelope("tools-default", "9.9.9", POLICIES, REQUEST_SCHEMA)))
    report.info("publish", "validate one envelope (parse, schema, annotations, probes)", f"{seconds * 1e3:,.2f} ms")
    reqs = requests()
    evaluate(ENVELOPE, reqs[0])  # compiled once, cached by content, as in the processor
    engine = timed(lambda i: evaluate(ENVELOPE, reqs[i % len(reqs)]), args.duration, "evaluations")
    report.check("evaluate", "evaluate(envelope, request), ALLOW/REQUIRE_APPROVAL/DENY in turn",
                 f"{per_us(engine):,.1f} µs ({engine.window.rate_text()})", f"≤ {TARGET_US} µs",
                 per_us(engine) <= TARGET_US, engine.window)
    with_policy, without = decide(True, args.duration), decide(False, args.duration)
    report.info("decide", "RequestToolCall in a TenantLedger, envelope active",
                f"{per_us(with_policy):,.1f} µs ({with_policy.window.rate_text()})")
    report.info("decide", "RequestToolCall in a TenantLedger, no envelope (deny, no Cedar)",
                f"{per_us(without):,.1f} µs ({without.window.rate_text()})")
    report.check("decide", "evaluation's share of a RequestToolCall decision",
                 f"{per_us(with_policy) - per_us(without):,.1f} µs", f"≤ {TARGET_US} µs",
                 per_us(with_policy) - per_us(without) <= TARGET_US,
                 with_policy.window if with_policy.window.count <= without.window.count else without.window)
    report.notes.append("follow-up: RequestToolCall latency through HTTP (p50/p99 at a fixed rate) with and "
                        "without policy needs the stack; bench/write measures the HTTP path")
    return report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.policy",
                                description="runledger policy benchmark: Cedar evaluation per tool call")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="2 s windows")
    size.add_argument("--smoke", action="store_true", help="0.2 s windows: every phase, no verdicts")
    p.add_argument("--duration", type=float, help="seconds of each timed window (" + cli.size_help(SIZES, "duration") + ")")
    p.add_argument("--json", type=Path, default=None, help="also write every number here")
    p.add_argument("--progress", dest="progress", action="store_true", default=None, help="accepted; unused")
    args = cli.sized(p.parse_args(argv), SIZES)
    started, load_before = datetime.now(timezone.utc), host.load_text()
    try:
        report = run(args)
    except Exception as error:  # noqa: BLE001 - reported; exit status 1
        traceback.print_exc()
        report = Report(errors=[f"failed: {error!r}"])
    cli.print_report("runledger policy (Cedar evaluation)", started, load_before, report,
                     f"windows of {args.duration:g} s; envelope infra/entry/demo_policy.py")
    if args.json:
        report.write_json(args.json, started=started.isoformat(), machine=host.machine(), code=host.git_state())
    return 1 if report.errors else 0
