"""Phase 4 (http): RequestToolCall latency through HTTP with policy evaluation against without, in one window.

Three sets of tenants, each tenant with one running run, spread evenly over the same partitions
(so their commands share the processor, its batches and its transactions):

  A  the demo envelope (infra/entry/demo_policy.py) published and activated;
  B  an envelope of one unconditional permit: the same work with a trivial evaluation;
  C  no envelope: the fail-closed DENY, decided without calling Cedar.

One open loop at a fixed rate sends low-risk RequestToolCall commands (ALLOW in A and B, so no
approval is opened and no violation recorded: two events per call in every set) to A, B, C in
turn (the order rotating), so the three sets are measured in the same seconds under the same load. Latency is measured
from each command's scheduled send time (no coordinated omission), as in bench/write's phase 5,
whose helpers start and probe the servers. The processor runs under bench/policy/timed_serve.py,
which times every evaluate() call inside it.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import os
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from bench.lib.measure import Dist, Window
from bench.lib.meters import CpuMeter
from bench.lib.openloop import open_loop
from bench.lib.procs import Child, free_port, python_argv
from bench.lib.tenants import spread_tenants
from bench.lib.topics import bench_settings
from bench.write.http import every_partition_owned, healthy
from bench.write.load import http_client
from bench.write.workload import serve_env
from domain.policy import REQUEST_SCHEMA
from infra.adapters import kafka
from infra.adapters.http.auth import mint
from infra.entry.demo_policy import POLICIES

PERMIT_ALL = ('@id("permit-all") @reason("benchmark baseline: one unconditional permit")\n'
              'permit(principal, action, resource);\n')
TOOLS = ("kb.search", "docs.read", "calendar.read")  # all low risk: ALLOW by the demo's `low-risk` permit
TIMED_ENTRY = "bench.policy.timed_serve"


@dataclass(frozen=True)
class PolicySet:
    key: str
    label: str
    policy_id: str | None  # None: no envelope published
    policies: str | None
    expected: tuple[str, tuple[str, ...], str | None]  # decision, determining @ids, cause

    @property
    def expected_text(self) -> str:
        kind, ids, cause = self.expected
        return f"{kind} ({', '.join(ids) or cause})"


SETS = (PolicySet("A", "A demo envelope", "tools-default", POLICIES, ("ALLOW", ("low-risk",), None)),
        PolicySet("B", "B one unconditional permit", "permit-all", PERMIT_ALL, ("ALLOW", ("permit-all",), None)),
        PolicySet("C", "C no envelope (DENY, no Cedar)", None, None, ("DENY", (), "fail_closed")))
TIMING_KEYS = {"tools-default": "A", "permit-all": "B", "none": "C"}


@dataclass
class Target:
    """One tenant of a set: its operator client and its running run."""
    tenant: str
    pset: PolicySet
    client: object  # infra.entry.client.LedgerClient (operator)
    admin: object   # the same with an admin token
    run_id: str = ""


def assign_sets(tenants: list[str], partitions: int) -> dict[str, list[str]]:
    """Tenants in partition order dealt A, B, C in turn: equal sets, each spread over the partitions alike."""
    out: dict[str, list[str]] = {s.key: [] for s in SETS}
    ordered = sorted(tenants, key=lambda t: kafka.partition_for(t, partitions))
    for i, tenant in enumerate(ordered):
        out[SETS[i % len(SETS)].key].append(tenant)
    return out


def decision_of(body: dict) -> tuple[str | None, tuple[str, ...], str | None]:
    d = body.get("decision") or {}
    return d.get("decision"), tuple(d.get("determining") or ()), d.get("cause")


def call_body(target: Target, n: int) -> dict:
    return {"type": "RequestToolCall", "run_id": target.run_id, "tool": TOOLS[n % len(TOOLS)], "risk_tier": "low",
            "params_digest": hashlib.sha256(f"{target.tenant}-{n}".encode()).hexdigest()}


def require(what: str, outcome) -> dict:
    if not outcome.accepted:
        raise RuntimeError(f"{what}: {outcome.status_code} {outcome.body}")
    return outcome.body


async def prepare(target: Target, version: str) -> None:
    """Publish and activate the set's envelope (as admin), then request and start a run; check one call."""
    pset = target.pset
    if pset.policy_id:
        require(f"{target.tenant}: PublishPolicy", await target.admin.send({
            "type": "PublishPolicy", "policy_id": pset.policy_id, "version": version, "policies": pset.policies,
            "cedar_schema": REQUEST_SCHEMA}))
        require(f"{target.tenant}: ActivatePolicy", await target.admin.send({
            "type": "ActivatePolicy", "policy_id": pset.policy_id, "version": version}))
    run = require(f"{target.tenant}: RequestRun", await target.client.send(
        {"type": "RequestRun", "agent_id": f"agent-{target.tenant}", "project": "bench-policy"}))
    target.run_id = run["aggregate_id"]
    require(f"{target.tenant}: StartRun", await target.client.send({"type": "StartRun", "run_id": target.run_id}))
    reply = require(f"{target.tenant}: first RequestToolCall", await target.client.send(call_body(target, -1)))
    if decision_of(reply) != pset.expected:
        raise RuntimeError(f"{target.tenant} (set {pset.key}) decided {reply.get('decision')}, "
                           f"expected {pset.expected_text}")


@dataclass
class Sample:
    set: str
    sent_at: float
    lag_ms: float       # how late the send was against its schedule
    latency_ms: float   # scheduled send → outcome
    done_at: float
    error: str | None   # None: accepted with the set's expected decision

    @property
    def ok(self) -> bool:
        return self.error is None


async def one(target: Target, n: int, scheduled: float) -> Sample:
    sent = time.perf_counter()
    try:
        outcome = await target.client.send(call_body(target, n), idempotency_key=f"bench-policy-{target.tenant}-{n}")
        if not outcome.accepted:
            error = f"{outcome.status_code} {outcome.body.get('code')}"
        elif (got := decision_of(outcome.body)) != target.pset.expected:
            error = f"decided {got[0]} ({', '.join(got[1]) or got[2]})"
        else:
            error = None
    except Exception as failure:  # noqa: BLE001 - counted as an error
        error = type(failure).__name__
    done = time.perf_counter()
    return Sample(target.pset.key, sent, (sent - scheduled) * 1000, (done - scheduled) * 1000, done, error)


class Interleave:
    """Every three sends carry one command of each set; each set's commands go to its tenants in turn.

    The order of the three rotates so that every set, and every tenant, takes each position equally often.
    In a fixed order A's command is always sent first, 1/rate before B's and 2/rate before C's; in runs with
    that order A's p99 came out ~10 % below B's and C's five times out of six (probably: under a stall the
    later sends are likelier to miss a batch and wait one transaction more, counted from the scheduled send).
    """

    def __init__(self, targets: dict[str, list[Target]]):
        self.order = [targets[s.key] for s in SETS]
        self.k = 0

    def next(self) -> tuple[Target, int]:
        k, self.k = self.k, self.k + 1
        sets, tenants = len(self.order), len(self.order[0])
        turn, position = divmod(k, sets)
        index, cycle = turn % tenants, turn // tenants
        group = self.order[(position + index + cycle) % sets]
        return group[index % len(group)], k


async def drive(mix: Interleave, rate: float, duration: float) -> list[Sample]:
    """Send int(rate × duration) commands at start + k/rate, whatever is still outstanding."""
    return await open_loop(rate, duration, lambda scheduled: one(*mix.next(), scheduled))


@dataclass
class SetResult:
    latency: Dist            # accepted calls with the expected decision, ms from the scheduled send
    sent: int
    errors: dict[str, int]   # by status and code (or exception, or an unexpected decision)


@dataclass
class HttpResult:
    sets: dict[str, SetResult]
    sent: Window             # commands sent over the measured seconds (send span)
    completed: Window        # accepted commands from the first send to the last outcome
    max_send_lag_ms: float
    cpu: dict[str, float]
    processor_group: str     # the CpuMeter group of the processor ("processor", or "serve" with the API)
    evaluations: dict[str, tuple[int, float, float]] | None  # set → (calls, wall s, thread CPU s) in the processor
    timing_span_s: float | None
    processor_threads: list[str]


def read_timings(directory: Path, pid: int) -> dict | None:
    """timed_serve's last snapshot: {"at": monotonic s, "totals": {key: [calls, wall s, CPU s]}, "threads": [...]}."""
    try:
        return json.loads((directory / f"evaluate-{pid}.json").read_text())
    except (OSError, ValueError):
        return None


def delta(before: dict | None, after: dict | None) -> tuple[dict[str, tuple[int, float, float]] | None, float | None]:
    """What the processor's evaluate() calls added between two snapshots, by set, and the seconds between them."""
    if before is None or after is None:
        return None, None
    out = {}
    for key, totals in after["totals"].items():
        earlier = before["totals"].get(key, [0, 0.0, 0.0])
        out[TIMING_KEYS.get(key, key)] = tuple(a - b for a, b in zip(totals, earlier))
    return out, after["at"] - before["at"]


def result_of(samples: list[Sample], cpu: dict, group: str, evaluations, span, threads) -> HttpResult:
    first, last = min(s.sent_at for s in samples), max(s.sent_at for s in samples)
    ok = [s for s in samples if s.ok]
    sets = {}
    for pset in SETS:
        mine = [s for s in samples if s.set == pset.key]
        sets[pset.key] = SetResult(Dist.of(s.latency_ms for s in mine if s.ok), len(mine),
                                   dict(Counter(s.error for s in mine if not s.ok)))
    completed = Window(len(ok), (max(s.done_at for s in ok) - first) if ok else 0.0, "commands")
    return HttpResult(sets, Window(len(samples), last - first, "commands"), completed,
                      max(s.lag_ms for s in samples), cpu, group, evaluations, span, threads)


def start_servers(args, settings, workdir: Path, port: int, timings: Path) -> list[Child]:
    """`serve` as bench/write's phase 5 starts it: split (API, processor) or one process; no projectors."""
    env = serve_env(settings, workdir, {"RUNLEDGER_API_PORT": str(port), "RUNLEDGER_DATABASE_URL": args.database_url})
    env["BENCH_POLICY_TIMINGS"] = str(timings)
    timed = TIMED_ENTRY if args.http_timing else "infra.entry.cli"
    if args.http_layout == "one":
        return [Child("serve-policy", python_argv(timed, "serve", "--no-projectors"), env, workdir)]
    return [Child("api-policy", python_argv("infra.entry.cli", "serve", "--no-processor", "--no-projectors"),
                  env, workdir),
            Child("processor-policy", python_argv(timed, "serve", "--no-api", "--no-projectors"), env, workdir)]


async def phase_http(args, prefix: str, secret: str, workdir: Path, report, log) -> HttpResult:
    from infra.entry.client import LedgerClient

    port = args.http_port or free_port()
    settings = bench_settings(args.bootstrap, prefix, args.partitions, secret)
    await kafka.ensure_topics(settings)
    timings = workdir / "timings"
    timings.mkdir(exist_ok=True)
    children = start_servers(args, settings, workdir, port, timings)
    tenants = spread_tenants(args.tenants_per_set * len(SETS), args.partitions, "bench-pol")
    by_set = assign_sets(tenants, args.partitions)
    https = {t: http_client("raw", port) for t in tenants}
    try:
        def client(tenant: str, subject: str, roles: list[str]):
            return LedgerClient(https[tenant], mint(secret, tenant, subject, roles, settings.jwt_audience))
        targets = {s.key: [Target(t, s, client(t, f"agent:{t}", ["operator"]), client(t, "bench-admin", ["admin"]))
                           for t in by_set[s.key]] for s in SETS}
        everyone = [t for group in targets.values() for t in group]
        await healthy(port, children, 90)
        await every_partition_owned({t.tenant: t.client for t in everyone}, children, tenants, args.partitions, 90)
        await asyncio.gather(*(prepare(t, "1.0.0") for t in everyone))
        log(f"phase http: {args.http_layout} layout up on port {port}; {len(tenants)} tenants "
            f"({', '.join(f'{k} {len(v)}' for k, v in targets.items())}); warm-up {args.http_warmup:g} s, "
            f"then {args.http_duration:g} s at {args.http_rate:g}/s")
        mix = Interleave(targets)
        await drive(mix, args.http_rate, args.http_warmup)
        processor = children[-1]
        group = "serve" if args.http_layout == "one" else "processor"
        meter = CpuMeter.with_stack({**{c.name.split("-")[0]: c.pid for c in children}, "bench client": os.getpid()},
                                    args.stack_home)
        before = read_timings(timings, processor.pid)
        samples = await drive(mix, args.http_rate, args.http_duration)
        cpu = meter.stop()
        after = read_timings(timings, processor.pid)
        evaluations, span = delta(before, after)
        return result_of(samples, cpu, group, evaluations, span, (after or {}).get("threads", []))
    finally:
        await asyncio.gather(*(h.aclose() for h in https.values()), return_exceptions=True)
        for child in children:
            if not child.stopped_cleanly():
                report.errors.append(f"{child.name} exited with status {child.proc.returncode}; log: {child.log_path}")
