"""What is timed in the page: first render, click to live update, command to live update.

Every time is read from the page's own clock (bench/console/browser.py OBSERVE, CLICKED below), and a
sample the page never shows within --sample-timeout counts as a failure, with what the page said instead.
Before the page is sent to a new run, the channels read model is waited for up to that run's chain_seq
(as a person who opens a run from a queue that already shows it): a run channel asked for before its
model has it is refused 404, and this benchmark times live updates, not that refusal.
"""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from bench.streams.api import wait_caught_up

# From the capturing click on Confirm to the card leaving the queue and the grant showing in the run's timeline.
CLICKED = """(id) => {
  const click = window.__click = {clicked: null, gone: null, granted: null};
  document.querySelector(`li.card[data-approval-id='${id}'] button[type=submit]`).addEventListener(
    "click", () => { click.clicked = performance.now(); }, {capture: true, once: true});
  new MutationObserver((mutations, observer) => {
    const now = performance.now();
    if (click.clicked === null) return;
    if (click.gone === null && !document.querySelector(`li.card[data-approval-id='${id}']`)) click.gone = now;
    if (click.granted === null && document.querySelector("aside.detail tr[data-type='approval.granted']")) {
      click.granted = now;
    }
    if (click.gone !== null && click.granted !== null) observer.disconnect();
  }).observe(document.body, {childList: true, subtree: true});
}"""


@dataclass
class Samples:
    """One condition's numbers (ms): first renders, click → queue, click → timeline, command → timeline."""
    renders: list[float] = field(default_factory=list)
    queue: list[float] = field(default_factory=list)
    timeline: list[float] = field(default_factory=list)
    updates: list[float] = field(default_factory=list)
    failures: dict[str, list[str]] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    def failed(self, what: str, why: str) -> None:
        self.failures.setdefault(what, []).append(why)


@dataclass
class Console:
    """The signed-in tab and what the benchmark sends beside it."""
    args: Any
    servers: Any
    commands: Any
    page: Any
    agent: str  # the token the benchmark's commands are sent with (an operator)
    log: Any

    @property
    def timeout_ms(self) -> float:
        return self.args.sample_timeout * 1000

    async def send(self, body: dict) -> dict:
        return await self.commands.send(self.agent, body)

    async def running_run(self) -> tuple[str, int]:
        run = (await self.send({"type": "RequestRun", "agent_id": "console-bench"}))["aggregate_id"]
        started = await self.send({"type": "StartRun", "run_id": run})
        return run, started["events"][-1]["chain_seq"]

    async def channels_at(self, seq: int) -> None:
        await wait_caught_up(self.servers, self.commands.http, self.agent, seq, self.args.sample_timeout,
                             "console: channels read model", self.log)

    async def what_page_says(self) -> str:
        return await self.page.evaluate("""() => [document.querySelector('.stream-state')?.textContent,
            document.querySelector('aside.detail, main')?.innerText?.slice(0, 160)].join(' | ')""")


async def renders(con: Console, count: int, out: Samples) -> None:
    """Reload the signed-in approval center (the token is in the tab's session storage) until cards show."""
    started = time.perf_counter()
    await con.page.goto(f"{con.servers.url}/console#/approvals")
    for _ in range(count):
        await con.page.reload()
        try:
            seen = await con.page.wait_for_function("() => window.__seen?.firstCard", timeout=con.timeout_ms)
            out.renders.append(float(await seen.json_value()))
        except Exception as error:  # noqa: BLE001 - a sample the page never showed
            out.failed("first render", f"{error!r:.300}: {await con.what_page_says()}")
    out.seconds["renders"] = time.perf_counter() - started


async def clicks(con: Console, count: int, out: Samples) -> None:
    """Per sample: a run waiting for a fresh approval, opened in the approval center; Approve, Confirm, timed."""
    started = time.perf_counter()
    for i in range(count):
        run, _ = await con.running_run()
        requested = await con.send({"type": "RequestApproval", "run_id": run, "action": f"console bench {i}",
                                    "risk_tier": "low"})
        await con.channels_at(requested["events"][-1]["chain_seq"])
        await con.page.goto(f"{con.servers.url}/console#/approvals/{requested['aggregate_id']}")
        try:
            await click_one(con, requested["aggregate_id"], out)
        except Exception as error:  # noqa: BLE001 - a sample the page never showed
            out.failed("click", f"{error!r:.300}: {await con.what_page_says()}")
    out.seconds["clicks"] = time.perf_counter() - started


async def click_one(con: Console, approval: str, out: Samples) -> None:
    page, timeout = con.page, con.timeout_ms
    card = page.locator(f"li.card[data-approval-id='{approval}']")
    await page.locator("aside.detail tr[data-type='approval.requested']").wait_for(timeout=timeout)
    await card.locator("button.approve").click(timeout=timeout)  # its label is the action, if the tenant keeps it
    await page.evaluate(CLICKED, approval)
    await card.get_by_role("button", name="Confirm approval").click(timeout=timeout)
    await page.wait_for_function("() => window.__click.gone !== null && window.__click.granted !== null",
                                 timeout=timeout)
    click = await page.evaluate("window.__click")
    out.queue.append(click["gone"] - click["clicked"])
    out.timeline.append(click["granted"] - click["clicked"])


async def updates(con: Console, count: int, rate: float, out: Samples) -> None:
    """StartStep commands POSTed open-loop to a run open in the page; each from its send to its row showing."""
    run, seq = await con.running_run()
    await con.channels_at(seq)
    await con.page.goto(f"{con.servers.url}/console#/runs/{run}")
    await con.page.locator("table.timeline tr[data-type='run.started']").wait_for(timeout=con.timeout_ms)
    sent: dict[int, float] = {}
    t0 = time.perf_counter() + 0.2

    async def one(i: int) -> None:
        await asyncio.sleep(max(0.0, t0 + i / rate - time.perf_counter()))
        at = time.time() * 1000
        outcome = await con.send({"type": "StartStep", "run_id": run, "kind": "tool", "name": f"step {i}"})
        sent[outcome["events"][-1]["chain_seq"]] = at
    await asyncio.gather(*(one(i) for i in range(count)))
    out.seconds["updates"] = time.perf_counter() - t0
    wanted = sorted(sent)
    try:
        await con.page.wait_for_function("(seqs) => seqs.every((s) => window.__seen.rows[s] !== undefined)",
                                         arg=wanted, timeout=con.timeout_ms)
    except Exception:  # noqa: BLE001 - some never showed: counted below, with what the page says
        pass
    rows = await con.page.evaluate("window.__seen.rows")
    out.updates.extend(rows[str(s)] - sent[s] for s in wanted if str(s) in rows)
    if missing := [s for s in wanted if str(s) not in rows]:
        page_says = await con.what_page_says()
        for seq in missing:
            out.failed("command", f"chain_seq {seq} never shown: {page_says}")
