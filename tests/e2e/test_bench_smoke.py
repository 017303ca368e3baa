"""Each benchmark's smallest run end to end: `bench/run.sh write|read|streams|evidence|policy --smoke`.

Exit status 0, the table has its rows, and windows too short to measure say so instead of a
verdict. The benchmarks run against one stack of this module's own (infra/local/stack.sh in a
temporary home, on free ports), never the shared one on 19092/15432: run.sh finds it running in
BENCH_HOME and reuses it, as it would a developer's bench stack.
"""
import os
import shutil
import subprocess
import sys
import tempfile
import time

import pytest

from bench.lib.measure import MIN_SAMPLES, TOO_SHORT, Window
from bench.lib.report import Report
from tests.own_stack import free_ports
from tests.support import REPO

STACK = ["bash", str(REPO / "infra" / "local" / "stack.sh")]


@pytest.fixture(scope="module")
def bench_env():
    home = tempfile.mkdtemp(prefix="rlbench-smoke-")
    os.chmod(home, 0o755)  # PostgreSQL runs as the postgres user, which must reach its data directory
    kafka, pg = free_ports()
    base = {k: v for k, v in os.environ.items() if not k.startswith(("RUNLEDGER_", "BENCH_"))}
    stack_env = {**base, "RUNLEDGER_HOME": home, "RUNLEDGER_KAFKA_PORT": str(kafka),
                 "RUNLEDGER_KAFKA_CONTROLLER_PORT": str(kafka + 1), "RUNLEDGER_PG_PORT": str(pg)}
    try:
        subprocess.run([*STACK, "up"], env=stack_env, cwd=REPO, check=True, stdout=subprocess.DEVNULL)
        yield {**base, "BENCH_HOME": home, "BENCH_KAFKA_PORT": str(kafka), "BENCH_PG_PORT": str(pg),
               "PYTHON": sys.executable}
    finally:
        subprocess.run([*STACK, "down"], env=stack_env, cwd=REPO, stdout=subprocess.DEVNULL)
        shutil.rmtree(home, ignore_errors=True)


def smoke(env: dict, name: str, *extra: str) -> dict[str, tuple[str, str, str]]:
    """Run one benchmark's smoke size (and extra options); return its table: metric → (measured, target, verdict)."""
    started = time.monotonic()
    done = subprocess.run(["bash", "bench/run.sh", name, "--smoke", "--no-progress", *extra], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=240)
    print(f"bench {name} --smoke: {time.monotonic() - started:.0f} s\n{done.stdout}\n{done.stderr[-3000:]}")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "reusing the stack already running" in done.stderr
    cells = [[c.strip() for c in line.strip().strip("|").split("|")]
             for line in done.stdout.splitlines() if line.startswith("| ") and not line.startswith("| phase ")]
    return {f"{phase}: {metric}": (measured, target, verdict) for phase, metric, measured, target, verdict in cells}


def verdict(table: dict, key: str) -> str:
    found = [v for k, v in table.items() if key in k]
    assert found, f"no row {key!r} in {sorted(table)}"
    return found[0][2]


def test_a_window_too_short_gets_no_verdict():
    report = Report()
    report.rate("1 processor", "append throughput", Window(2_500, 0.05), minimum=25_000)
    report.rate("1 processor", "append throughput, long", Window(50_000, 2.0), minimum=25_000)
    report.rate("1 processor", "append throughput, few", Window(MIN_SAMPLES - 1, 60.0), minimum=1)
    assert [r.verdict for r in report.rows] == [TOO_SHORT, "pass", TOO_SHORT]
    assert "2,500 events in 0.05 s" in report.rows[0].measured


def test_write_smoke(bench_env):
    table = smoke(bench_env, "write", "--telemetry")
    assert verdict(table, "1 processor: append throughput, events/s (steady)") == "info"  # no target of its own
    assert verdict(table, "1 processor: decide+seal+encode, µs per event") == TOO_SHORT
    assert verdict(table, "2 produce: processor / raw produce") == TOO_SHORT
    for row in ("decide+seal+encode only", "raw aiokafka produce ceiling", "raw aiokafka consume",
                "eventsourcing/postgres batch", "API+processor: p99 latency", "floor: echo endpoint, no Kafka: p99"):
        verdict(table, row)
    # phase 6 at smoke size: one batch of 500 commands, fewer events than any verdict needs
    assert verdict(table, "6 batch: API+processor: batch ingest through HTTP, events/s (500 per request") == TOO_SHORT
    accepted = table[next(k for k in table if k.startswith("6 batch: API+processor: commands accepted/s"))][0]
    assert "(500 commands in " in accepted, accepted  # every command of the batch accepted
    # phase 7: telemetry off vs exported to the bench's OTLP sink, every window too short for a verdict
    for row in ("processor events/s: export / off", "processor CPU per event: export vs off",
                "http export vs off: p50 / p99", "http scrape vs off: p50 / p99"):
        assert verdict(table, f"7 telemetry: {row}") == TOO_SHORT
    received = table["7 telemetry: OTLP sink received from the processor (export)"][0]
    assert "(2,000 runledger.decide for 2,000 commands)" in received, received  # every sampled command's span
    served = table["7 telemetry: OTLP sink received from serve (export)"][0]
    assert int(served.split("(")[1].split(" runledger.decide")[0].replace(",", "")) >= 800, served  # 1 s + 3 s at 200/s
    scrapes = table["7 telemetry: Prometheus scrapes (scrape)"][0]
    assert int(scrapes.split(" at 1 per s, ")[0]) >= 1 and " 0 failed;" in scrapes, scrapes


def test_read_smoke(bench_env):
    table = smoke(bench_env, "read")
    for name in ("runs (PostgreSQL)", "approvals (PostgreSQL)", "audit (ClickHouse/chdb)", "cost (ClickHouse/chdb)"):
        verdict(table, f"catch-up: {name} from start to lag 0")
    for name in ("runs", "audit"):
        verdict(table, f"rebuild: {name} (")
    for name in ("runs", "approvals", "audit", "cost"):
        assert verdict(table, f"steady @ 250 ev/s: {name}: end-to-end lag") == TOO_SHORT
        verdict(table, f"steady @ 250 ev/s: {name}: polls stored")
    assert "statements" in table[next(k for k in table if "chdb statements in the window" in k)][0]


def test_streams_smoke(bench_env):
    table = smoke(bench_env, "streams")
    assert verdict(table, "1 fan-out: events delivered / expected") == "pass"
    verdict(table, "1 fan-out: latency p50 / p99 / max @ 20 cmd/s")
    assert verdict(table, "2 replay: Last-Event-ID: 0 → all 2,000 events") == TOO_SHORT
    assert verdict(table, "2 replay: exactly once, in order") == "pass"


def test_evidence_smoke():
    """The evidence benchmark needs no stack: every phase runs, its windows too short to get a verdict."""
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("RUNLEDGER_", "BENCH_"))},
           "PYTHON": sys.executable}
    done = subprocess.run(["bash", "bench/run.sh", "evidence", "--smoke", "--no-progress"], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    print(done.stdout, done.stderr[-3000:])
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    cells = [[c.strip() for c in line.strip().strip("|").split("|")]
             for line in done.stdout.splitlines() if line.startswith("| ") and not line.startswith("| phase ")]
    table = {f"{phase}: {metric}": (measured, target, verdict) for phase, metric, measured, target, verdict in cells}
    for row in ("1 compact tree: append per event", "1 compact tree: root()", "2 tree store: append per event",
                "2 tree store: nodes a poll stores (frontier + append", "inclusion @ 20,000: make a proof",
                "inclusion @ 20,000: make a proof from only the nodes it reads", "inclusion @ 20,000: verify a proof",
                "consistency → 20,000: make a proof",
                "consistency → 20,000: make a proof from only the nodes it reads",
                "consistency → 20,000: verify a proof",
                "5 checkpoint: sign (", "5 checkpoint: open (", "6 export: whole tenant: events written",
                "6 export: one run (5 events) out of 1,002", "7 verify: whole tenant, offline"):
        assert verdict(table, row) == TOO_SHORT
    assert "⌈log2 n⌉ = 15" in table[next(k for k in table if "inclusion" in k and "proof size" in k)][0]
    for phase in ("3 inclusion @ 20,000", "4 consistency → 20,000"):  # at most 2 ⌈log2 n⌉ + 1, never n
        read = next(v for k, v in table.items() if k.startswith(f"{phase}: nodes read per proof"))
        assert read[0].endswith("instead of 20,000 leaves") and int(read[0].split("max ")[1].split()[0]) <= 31
    assert verdict(table, "5 checkpoint: signed note") == "info"


def test_policy_smoke_with_http(bench_env):
    """Phases 1-3 in the bench process, then RequestToolCall over HTTP for sets A (demo envelope), B (one
    unconditional permit), C (no envelope) in one 2 s window: every row, each call decided as its set
    expects, nothing rejected, and no verdict from so few samples."""
    table = smoke(bench_env, "policy", "--http")
    assert verdict(table, "evaluate: evaluate(envelope, request)") == TOO_SHORT
    assert verdict(table, "decide: evaluation's share of a RequestToolCall decision") == TOO_SHORT
    for key in ("A vs B", "A vs C"):
        assert verdict(table, f"http: p99 {key}: ") == TOO_SHORT
    expected = (("A demo envelope", "ALLOW (low-risk)"), ("B one unconditional permit", "ALLOW (permit-all)"),
                ("C no envelope", "DENY (fail_closed)"))
    for label, decided in expected:
        rows = {k.split(": ", 2)[2].split(" @ ")[0]: v for k, v in table.items() if k.startswith(f"http: {label}")}
        assert sorted(rows) == ["decided / rejected by code", "p50 / p99 / max"], sorted(table)
        measured = rows["decided / rejected by code"][0]
        count, rejected = measured.split(" × ", 1)[1].split(" / ")
        assert measured.startswith(decided) and rejected == "0", measured
        assert count.split(" of ")[0] == count.split(" of ")[1] != "0", measured
    assert " / " in table[next(k for k in table if "evaluate() inside the processor, per call" in k)][0]


def test_console_smoke(bench_env):
    """The console in headless Chromium, idle and under a small streams load (50 subscribers, 10 cmd/s): every
    sample shows in the page, and so few samples get no verdict."""
    table = smoke(bench_env, "console")
    for phase in ("idle", "load 50 subs @ 10 cmd/s"):
        assert table[f"{phase}: samples shown within 60 s"] == (
            "first render 2 of 2, click 2 of 2, command 20 of 20", "all", "pass")
        rows = {k: v for k, v in table.items() if k.startswith(f"{phase}: ") and " p50 / max" in k}
        assert len(rows) == 4 and {v[2] for v in rows.values()} == {TOO_SHORT}, rows
    assert table["load: SSE subscribers of one tenant's stream"][0].startswith("50 of 50 connected")


def test_failover_smoke(bench_env):
    """One kill and a 1,000-event rebuild: the takeover is timed and split, but one takeover gives no pass; the
    rebuild from a snapshot folds what a replay from offset 0 folds."""
    table = smoke(bench_env, "failover")
    assert table["kills: kill → successor accepts"][1:] in (("max ≤ 5 s", TOO_SHORT), ("max ≤ 5 s", "MISS"))
    assert {table[f"kills: {split}"][2] for split in ("detection", "fencing", "queued", "rebuild", "first accept")} \
        == {"info"}
    assert table["kills: session timeout (broker floor)"][0] == "3,000 ms (1000 ms)"
    assert table["rebuild: 1,000 + 1,000 events: from its snapshot"][1:] == ("same fold as from offset 0", "pass")
