"""The console benchmark's run: the server, the console idle, then under the streams load (docs/console.md)."""
from __future__ import annotations

import shutil
import tempfile
import uuid
from pathlib import Path

from bench.console.args import parse_args
from bench.console.browser import OBSERVE, launch, sign_in
from bench.console.load import Load
from bench.console.samples import Console, Samples, clicks, renders, updates
from bench.lib import cli
from bench.lib.cli import guarded
from bench.lib.measure import TOO_SHORT, Dist, Window, fmt_ms
from bench.lib.report import Report, Row
from bench.streams.api import Commands
from bench.streams.main import cleanup
from bench.streams.server import Servers
from bench.streams.worker import raise_nofile

log = cli.logger("bench console")


class ConsoleServers(Servers):
    """The streams benchmark's server, its tenants' archive in the work directory rather than the repo's."""

    def env(self, name: str) -> dict[str, str]:
        return {**super().env(name), "RUNLEDGER_ARCHIVE_DIR": str(self.workdir / f"archive-{name}")}
VIEWPORT = {"width": 1280, "height": 900}


async def condition(con: Console, name: str) -> Samples:
    args, out = con.args, Samples()
    log(f"{name}: {args.renders} first renders, {args.clicks} clicks, {args.updates} commands at {args.update_rate:g}/s")
    await renders(con, args.renders, out)
    await clicks(con, args.clicks, out)
    await updates(con, args.updates, args.update_rate, out)
    return out


async def console_tab(servers: Servers, playwright, person: str):
    browser = await launch(playwright)
    page = await (await browser.new_context(viewport=VIEWPORT)).new_page()
    await page.add_init_script(OBSERVE)
    await sign_in(page, servers.url, person)
    return browser, page


async def phases(args, servers: Servers, report: Report) -> None:
    import httpx
    from infra.adapters.http.auth import mint
    from playwright.async_api import async_playwright

    tenant = f"console-{uuid.uuid4().hex[:8]}"
    agent = mint(servers.secret, tenant, "bench-agent", ["operator"], ttl_s=24 * 3600)
    person = mint(servers.secret, tenant, "ann", ["approver", "operator"], ttl_s=24 * 3600)
    limits = httpx.Limits(max_connections=1000, max_keepalive_connections=64)
    async with httpx.AsyncClient(base_url=servers.url, timeout=httpx.Timeout(130.0, pool=None), limits=limits) as http:
        commands = Commands(http, servers)
        await commands.first(agent, args.start_timeout)
        async with async_playwright() as playwright:
            browser, page = await console_tab(servers, playwright, person)
            con = Console(args, servers, commands, page, agent, log)
            run, _ = await con.running_run()  # one approval stays pending: the queue a reload renders
            await con.send({"type": "RequestApproval", "run_id": run, "action": "stays pending", "risk_tier": "low"})
            idle = await condition(con, "idle")
            load, held = Load(args, servers, commands, log), Report()
            try:
                await load.start()
                loaded = await condition(con, f"under load ({args.subscribers:,} subscribers, {args.rate:g} cmd/s)")
            finally:
                await guarded(report, "stopping the load", load.stop(held))
                load.quit()
                await browser.close()
    comparison(report, args, idle, loaded)
    report.rows += held.rows  # what the load was, after the numbers it was the load of


def timed(report: Report, phase: str, metric: str, values: list[float], window: Window) -> None:
    """p50 / max of a page's samples; fewer than MIN_SAMPLES (or a window under MIN_WINDOW_S) is too short."""
    dist = Dist.of(values)
    measured = f"{fmt_ms(dist.p50)} / {fmt_ms(dist.max)} ms ({window.text()})" if dist.n else "no sample"
    report.rows.append(Row(phase, metric, measured, "—", TOO_SHORT if not window.measurable else "info"))


def comparison(report: Report, args, idle: Samples, loaded: Samples) -> None:
    conditions = (("idle", idle), (f"load {args.subscribers:,} subs @ {args.rate:g} cmd/s", loaded))
    metrics = (("first render: reload → queue shows its cards, p50 / max", "renders", "reloads", ["renders"]),
               ("click Confirm → card leaves the queue, p50 / max", "clicks", "clicks", ["queue"]),
               ("click Confirm → grant in the run's timeline (stream), p50 / max", "clicks", "clicks", ["timeline"]),
               (f"StartStep POSTed → its row in the open timeline (stream) @ {args.update_rate:g}/s, p50 / max",
                "updates", "commands", ["updates"]))
    for metric, window, unit, (field,) in metrics:
        for phase, samples in conditions:
            values = getattr(samples, field)
            timed(report, phase, metric, values, Window(len(values), samples.seconds.get(window, 0.0), unit))
    for phase, samples in conditions:
        asked = {"first render": args.renders, "click": args.clicks, "command": args.updates}
        failed = {what: len(samples.failures.get(what, [])) for what in asked}
        report.check(phase, f"samples shown within {args.sample_timeout:g} s",
                     ", ".join(f"{what} {asked[what] - failed[what]} of {asked[what]}" for what in asked),
                     "all", not any(failed.values()))
        for what, reasons in samples.failures.items():
            report.notes.append(f"{phase}: {len(reasons)} {what} sample(s) never shown; first: {reasons[0]}")


async def main_async(args) -> Report:
    report = Report()
    if not args.database_url:
        report.errors.append("the console benchmark needs PostgreSQL: --database-url or RUNLEDGER_DATABASE_URL")
        return report
    raise_nofile()
    workdir = Path(tempfile.mkdtemp(prefix="rlconsole-"))
    servers = ConsoleServers(args, workdir)
    log(f"server: prefix {servers.prefix}, port {servers.port}, logs in {workdir}")
    servers.start()
    try:
        await guarded(report, "console benchmark", phases(args, servers, report))
    finally:
        log("stopping the server")
        servers.stop()
        if not args.keep:
            await cleanup(args, servers, workdir, report)
            for path in workdir.glob("archive-*"):
                shutil.rmtree(path, ignore_errors=True)
    report.notes.append("Chromium's CPU is in 'others' of the load's CPU row")
    return report


def describe(args) -> str:
    return (f"size {args.size}: load {args.subscribers:,} SSE subscribers over {args.client_procs} client "
            f"process(es) + {args.rate:g} RequestRun/s; per condition {args.renders} reloads, {args.clicks} clicks, "
            f"{args.updates} StartStep at {args.update_rate:g}/s")


def main(argv: list[str] | None = None) -> int:
    return cli.run("runledger console", parse_args(argv), main_async, describe)
