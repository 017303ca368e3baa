"""The policy benchmark (bench/policy/README.md): what evaluating an envelope costs a tool call.

Phases 1-3 run in one process, no broker, no database: the engine alone (domain/policy.py
`evaluate`), and the whole decision of a RequestToolCall in a TenantLedger with the envelope active
against the same command with none active (which denies without calling Cedar), so the difference
is Cedar's share. Phase 4 (`--http`, bench/policy/http.py) needs the stack: RequestToolCall latency
through HTTP at a fixed rate, with policy evaluation against without, in the same window.
"""
from __future__ import annotations

import argparse
import asyncio
import gc
import hashlib
import json
import secrets
import shutil
import tempfile
import traceback
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path

from bench.evidence.timing import once, timed
from bench.lib import cli, host
from bench.lib.cli import guarded
from bench.lib.report import Report
from bench.lib.topics import delete_topics, drop_read_models
from domain.ledger import TenantLedger
from domain.policy import REQUEST_SCHEMA, PolicyEnvelope, evaluate, probe_requests, validate
from infra.entry.demo_policy import POLICIES

log = cli.logger("bench policy")
# http: ≥ 1,000 samples per set in the measured window at the default rate (150/s over 3 sets) from --quick up
SIZES: cli.Sizes = {"full": {"duration": 3.0, "http_duration": 40.0, "http_warmup": 3.0},
                    "quick": {"duration": 2.0, "http_duration": 24.0, "http_warmup": 2.0},
                    "smoke": {"duration": 0.2, "http_duration": 2.0, "http_warmup": 0.5}}
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


def engine_phases(args: argparse.Namespace, report: Report) -> None:
    """Phases 1-3: publish, evaluate, decide (one process, no stack)."""
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


def run(args: argparse.Namespace) -> Report:
    report = Report()
    if note := host.busy_note():
        report.notes.append(note)
    engine_phases(args, report)
    return report


async def with_http(args: argparse.Namespace) -> Report:
    """Phases 1-3 (unless --http-only), then phase 4 on its own topics; cleanup afterwards (unless --keep)."""
    from bench.policy.http import phase_http
    from bench.policy.rows import http_rows

    report = Report()
    if note := host.busy_note():
        report.notes.append(note)
    if not args.http_only:
        engine_phases(args, report)
    if not args.database_url:
        report.notes.append("phase http skipped: the API needs PostgreSQL (--database-url, RUNLEDGER_DATABASE_URL)")
        return report
    gc.collect()
    gc.freeze()  # keep the collector from walking phase 3's ledgers while the load generator runs
    prefix, secret = f"bench{secrets.token_hex(4)}", secrets.token_urlsafe(36)
    workdir = Path(tempfile.mkdtemp(prefix=f"rlbench-{prefix[5:]}-"))
    report.data.update(prefix=prefix, workdir=str(workdir))
    log(f"bench {prefix}: broker {args.bootstrap}, logs in {workdir}")
    try:
        http = await guarded(report, "phase http", phase_http(args, prefix, secret, workdir, report, log))
        if http:
            http_rows(report, http, args.http_rate)
            report.data["http"] = asdict(http)
    finally:
        if not args.keep:
            await cleanup(args, prefix, workdir, report)
    return report


async def cleanup(args: argparse.Namespace, prefix: str, workdir: Path, report: Report) -> None:
    try:
        await delete_topics(args.bootstrap, [prefix])
    except Exception as error:  # noqa: BLE001
        report.notes.append(f"could not delete bench topics: {error!r}")
    shutil.rmtree(workdir / "chdb", ignore_errors=True)
    try:
        await asyncio.to_thread(drop_read_models, args.database_url, [prefix])
    except Exception as error:  # noqa: BLE001
        report.notes.append(f"could not drop the bench read-model schemas: {error!r}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = cli.parser("python -m bench.policy", "runledger policy benchmark: Cedar evaluation per tool call and "
                   "(--http) RequestToolCall latency through HTTP with and without policy")
    p.add_argument("--duration", type=float, help="seconds of each timed window of phases 1-3 ("
                   + cli.size_help(SIZES, "duration") + ")")
    p.add_argument("--http", action="store_true",
                   help="also phase 4: RequestToolCall over HTTP, sets A/B/C in one open loop (needs the stack: "
                        "its own, see bench/lib/stack.py, unless RUNLEDGER_KAFKA_BOOTSTRAP is set)")
    p.add_argument("--http-only", action="store_true", help="only phase 4 (implies --http)")
    p.add_argument("--http-rate", type=float, default=150.0, help="RequestToolCall/s over all three sets, open loop")
    p.add_argument("--http-duration", type=float,
                   help="measured seconds (" + cli.size_help(SIZES, "http_duration") + ")")
    p.add_argument("--http-warmup", type=float,
                   help="unmeasured seconds first (" + cli.size_help(SIZES, "http_warmup") + ")")
    p.add_argument("--http-layout", choices=["split", "one"], default="split",
                   help="split (default): `serve --no-processor` + `serve --no-api`, so the processor's CPU is its "
                        "own; one: API and processor in one `serve`")
    p.add_argument("--no-http-timing", dest="http_timing", action="store_false",
                   help="run the processor unpatched (default: bench/policy/timed_serve.py times evaluate() in it)")
    p.add_argument("--tenants-per-set", type=int, default=None,
                   help="tenants in each of A, B, C (default: --partitions)")
    p.add_argument("--partitions", type=int, default=6)
    p.add_argument("--http-port", type=int, default=None, help="API port (default: a free one)")
    args = cli.sized(p.parse_args(argv), SIZES)
    args.http = args.http or args.http_only
    args.tenants_per_set = args.tenants_per_set or args.partitions
    return args


def describe(args: argparse.Namespace) -> str:
    engine = "" if args.http_only else f"windows of {args.duration:g} s; "
    return (f"{engine}envelope infra/entry/demo_policy.py; broker {args.bootstrap}; http: {args.http_layout} layout, "
            f"{args.tenants_per_set} tenants per set over {args.partitions} partitions, {args.http_duration:g} s at "
            f"{args.http_rate:g} RequestToolCall/s (A, B, C in turn) after {args.http_warmup:g} s; latency from each "
            "command's scheduled send time (open loop)")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.http:
        return cli.run("runledger policy (Cedar evaluation, RequestToolCall over HTTP)", args, with_http, describe)
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
