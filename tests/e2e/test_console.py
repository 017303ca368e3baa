"""The console in a real browser (Debian's Chromium, headless) against `runledger serve` on real Kafka and
PostgreSQL: approving from the queue shows in the queue and the run's timeline; one tenant's approver sees
nothing of another's; the keyboard reaches approve and deny; every page renders its expected text at desktop
and phone width (screenshots under the test's tmp dir); the tab holds one stream, never more.

Timings are printed (`-s`) and asserted nowhere: time to first render, and from a click on approve to the
queue and the timeline showing it.
"""
import re
import uuid

import httpx
import pytest
from playwright.async_api import async_playwright, expect

from bench.console.browser import launch, sign_in
from domain.policy import REQUEST_SCHEMA
from tests.support import Service, make_settings, token, unique, wait_until
from tests.unit.test_policy import POLICIES

VERIFY = re.compile(r"^Verify event [0-9]+$")
DESKTOP, PHONE = {"width": 1280, "height": 900}, {"width": 390, "height": 844}
expect.set_options(timeout=20_000)  # a shared two-core machine: wait on the DOM, never on the clock


@pytest.fixture(scope="module")
async def svc():
    """`runledger serve` signing checkpoints every second, so the timeline's proofs can be checked."""
    service = Service(make_settings(checkpoint_interval_s=1)).start()
    try:
        await service.ready(90)
        yield service
    finally:
        service.stop()


@pytest.fixture(scope="module")
async def browser():
    async with async_playwright() as playwright:  # Debian's chromium, off the network (shared with bench/console)
        launched = await launch(playwright)
        yield launched
        await launched.close()


@pytest.fixture
async def http(svc):
    async with httpx.AsyncClient(base_url=svc.url, timeout=30) as client:
        yield client


def auth(tenant: str, subject: str, *roles: str) -> dict:
    return {"Authorization": f"Bearer {token(tenant, subject, roles)}"}


async def send(http, tenant: str, body: dict, *roles: str, subject: str = "agent") -> dict:
    response = await http.post("/v1/commands", json=body, headers=auth(tenant, subject, *(roles or ("operator",))))
    assert response.status_code == 200, response.text
    return response.json()


async def governed_tenant(http, tenant: str) -> None:
    """A tenant that keeps content (sealed) and whose policy asks two approvers for high-risk writes."""
    await send(http, tenant, {"type": "SetContentPolicy", "store_content": True}, "admin")
    await send(http, tenant, {"type": "PublishPolicy", "policy_id": "default", "version": "1.0.0",
                              "policies": POLICIES, "cedar_schema": REQUEST_SCHEMA}, "admin")
    await send(http, tenant, {"type": "ActivatePolicy", "policy_id": "default", "version": "1.0.0"}, "admin")


async def pending_approval(http, tenant: str, action: str) -> dict:
    """A run with a step, a tool call the policy sends to two approvers, its approval, and a cost."""
    run = (await send(http, tenant, {"type": "RequestRun", "agent_id": "support-bot", "project": "helpdesk"}))["aggregate_id"]
    await send(http, tenant, {"type": "StartRun", "run_id": run})
    await send(http, tenant, {"type": "StartStep", "run_id": run, "kind": "tool", "name": "cleanup"})
    call = await send(http, tenant, {"type": "RequestToolCall", "run_id": run, "tool": "shell", "risk_tier": "high",
                                     "params_digest": "c" * 64})
    assert call["decision"]["decision"] == "REQUIRE_APPROVAL"
    approval = await send(http, tenant, {"type": "RequestApproval", "run_id": run, "tool_call_id": call["aggregate_id"],
                                         "action": action, "risk_tier": "high"})
    cost = await send(http, tenant, {"type": "RecordCost", "run_id": run, "provider": "openai", "model": "gpt-x",
                                     "tokens_in": 120, "tokens_out": 30, "amount_micros": 4200, "currency": "USD"})
    return {"run": run, "approval": approval["aggregate_id"], "tool_call": call["aggregate_id"],
            "seq": cost["events"][-1]["chain_seq"]}


# How many streams the page holds at once: each fetch of /v1/streams/ is open from its call until it is
# aborted, refused, or its body ends (counted in the page, where the console opens and closes them).
COUNT_STREAMS = """(() => {
  const original = window.fetch;
  const streams = window.__streams = {open: 0, most: 0, opened: 0};
  window.fetch = function (input, init = {}) {
    if (!String(input).includes("/v1/streams/")) return original.call(this, input, init);
    streams.open += 1; streams.opened += 1; streams.most = Math.max(streams.most, streams.open);
    let closed = false;
    const close = () => { if (!closed) { closed = true; streams.open -= 1; } };
    init.signal?.addEventListener("abort", close, {once: true});
    return original.call(this, input, init).then((response) => {
      if (!response.ok || !response.body) { close(); return response; }
      const body = response.body.pipeThrough(new TransformStream({flush: close}));
      return new Response(body, {status: response.status, headers: response.headers});
    }, (error) => { close(); throw error; });
  };
})();"""


async def open_console(browser, svc, bearer: str, hash_: str = "", viewport: dict = DESKTOP):
    """A new tab signed in with the token (pasted into the form, as a person does)."""
    context = await browser.new_context(viewport=viewport)
    page = await context.new_page()
    await page.add_init_script(COUNT_STREAMS)
    await sign_in(page, svc.url, bearer)
    if hash_:
        await page.goto(f"{svc.url}/console{hash_}")
    return page


async def shot(page, tmp_path, name: str) -> None:
    path = tmp_path / f"{name}.png"
    await page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 10_000, f"the screenshot {path} is empty"


async def fits(page) -> bool:
    """Nothing is wider than the window (tables scroll inside their own box)."""
    return await page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")


async def test_approving_in_the_queue_shows_in_the_queue_and_the_run_timeline_live(svc, browser, http, tmp_path):
    # Given a pending approval of a tool call the policy sends to two approvers, one of whom (bob) has voted
    tenant = unique("acme-")
    await governed_tenant(http, tenant)
    ids = await pending_approval(http, tenant, "restart the billing cluster")
    await send(http, tenant, {"type": "GrantApproval", "approval_id": ids["approval"], "reason": "checked the plan"},
               "approver", subject="bob")
    # When ann, an approver (and auditor), opens it in the approval center
    page = await open_console(browser, svc, token(tenant, "ann", ("approver", "auditor")), f"#/approvals/{ids['approval']}")
    card = page.locator(f"li.card[data-approval-id='{ids['approval']}']")
    # Then she sees its context: run, tool, risk tier, the policy decision and reason, the votes so far
    for text in ("restart the billing cluster", "high", "shell", "REQUIRE_APPROVAL by default@1.0.0",
                 "approval required by two-person-high", "1 of 2: bob", ids["run"][:8]):
        await expect(card).to_contain_text(text)
    await expect(page.locator("aside.detail")).to_contain_text("bob · ")
    await expect(page.locator("aside.detail")).to_contain_text("checked the plan")
    timeline = page.locator("aside.detail table.timeline")
    await expect(timeline.locator("tr[data-type='tool_call.policy_decided']")).to_contain_text("REQUIRE_APPROVAL")
    await expect(timeline.locator("tr[data-type='approval.vote_recorded']")).to_have_count(1)
    await expect(timeline.locator("tr[data-type='budget.cost_recorded']")).to_contain_text("0.0042 USD")
    await expect(page.locator(".stream-state")).to_have_text("live")
    await shot(page, tmp_path, "approvals-desktop")
    # When she approves, with a reason
    await card.get_by_role("button", name="Approve “restart the billing cluster”").click()
    await card.get_by_label("Reason (optional)").fill("second pair of eyes")
    await page.evaluate("""() => {
        window.__clicked = null; window.__granted = null; window.__gone = null;
        const id = document.querySelector("li.card.selected").dataset.approvalId;
        document.querySelector("li.card.selected button[type=submit]").addEventListener(
            "click", () => { window.__clicked = performance.now(); }, {capture: true});
        new MutationObserver(() => {
            const now = performance.now();
            if (window.__granted === null && document.querySelector("tr[data-type='approval.granted']")) window.__granted = now;
            if (window.__gone === null && !document.querySelector(`li.card[data-approval-id='${id}']`)) window.__gone = now;
        }).observe(document.body, {childList: true, subtree: true});
    }""")
    await card.get_by_role("button", name="Confirm approval").click()
    # Then it leaves the queue, and the run's timeline shows her vote, the grant and the tool call approved
    await expect(card).to_have_count(0)
    await expect(timeline.locator("tr[data-type='approval.granted']")).to_contain_text("granted by bob, ann")
    await expect(timeline.locator("tr[data-type='tool_call.approved']")).to_contain_text("shell: approved")
    await expect(timeline.locator("tr[data-type='approval.vote_recorded']")).to_have_count(2)
    await expect(page.locator(".queue")).to_contain_text("No approval is pending.")
    latency = await page.evaluate("({queue: window.__gone - window.__clicked, timeline: window.__granted - window.__clicked})")
    # And each event's inclusion in a signed checkpoint checks out, in the browser, from the proof's bytes
    granted_seq = int(await timeline.locator("tr[data-type='approval.granted']").get_attribute("data-chain-seq"))
    await wait_until(lambda: checkpointed(http, tenant, granted_seq), 30, "a checkpoint covering the grant")
    await timeline.get_by_role("button", name=f"Verify event {granted_seq}").click()
    await expect(timeline.locator(f"tr[data-chain-seq='{granted_seq}'] .verdict")).to_contain_text(
        "✓ included in the signed tree of size")
    await expect(timeline.locator(f"tr[data-chain-seq='{granted_seq}'] .verdict")).to_contain_text("signature valid")
    await shot(page, tmp_path, "approvals-approved")
    streams = await page.evaluate("window.__streams")
    assert (streams["most"], streams["open"]) == (1, 1), streams  # one at a time: the queue's, then queue and run
    print(f"\nconsole live update after a click on approve: queue {latency['queue']:.0f} ms, "
          f"timeline {latency['timeline']:.0f} ms")
    # And the time to first render, on a reload of the signed-in tab (the token is in its session storage)
    await page.reload()
    await expect(page.locator("tr[data-type='approval.granted']")).to_have_count(1)
    marks = await page.evaluate("""() => ({
        first: performance.getEntriesByName("console:first-render")[0]?.startTime,
        loaded: performance.getEntriesByType("navigation")[0].domContentLoadedEventEnd})""")
    print(f"console time to first render: {marks['first']:.0f} ms (DOMContentLoaded {marks['loaded']:.0f} ms)")
    await page.context.close()


async def test_an_approval_opened_by_link_before_its_read_model_has_it_shows_with_its_run_live(svc, browser, http):
    # Given an approver who opens an approval's link before the approvals read model has it (here: before it is
    # even requested; under load, a link opened while the model is behind): its first read is a 404
    tenant = unique("early-")
    await send(http, tenant, {"type": "SetContentPolicy", "store_content": True}, "admin")
    run = (await send(http, tenant, {"type": "RequestRun", "agent_id": "support-bot"}))["aggregate_id"]
    await send(http, tenant, {"type": "StartRun", "run_id": run})
    approval = str(uuid.uuid4())
    page = await open_console(browser, svc, token(tenant, "ann", ("approver", "auditor")), f"#/approvals/{approval}")
    await expect(page.locator("aside.detail")).to_contain_text("No such approval in this tenant.")
    await expect(page.locator(".stream-state")).to_have_text("live")
    # When it is requested
    await send(http, tenant, {"type": "RequestApproval", "approval_id": approval, "run_id": run,
                              "action": "rotate the signing key", "risk_tier": "low"})
    # Then the queue and the detail show it, with its run's timeline, where her grant then shows live
    card = page.locator(f"li.card[data-approval-id='{approval}']")
    await expect(card).to_contain_text("rotate the signing key")
    timeline = page.locator("aside.detail table.timeline")
    await expect(timeline.locator("tr[data-type='approval.requested']")).to_contain_text("1 × approver")
    await card.get_by_role("button", name="Approve “rotate the signing key”").click()
    await card.get_by_role("button", name="Confirm approval").click()
    await expect(timeline.locator("tr[data-type='approval.granted']")).to_contain_text("granted by ann")
    await expect(card).to_have_count(0)
    streams = await page.evaluate("window.__streams")
    assert (streams["most"], streams["open"]) == (1, 1), streams  # the queue's stream, then the queue's and the run's
    await page.context.close()


async def test_a_run_opened_by_link_before_the_stream_knows_it_follows_it_once_it_lands(svc, browser, http):
    # Given an operator who opens a run's link before the run exists (under load: while the channels model is behind)
    tenant = unique("early-run-")
    run = str(uuid.uuid4())
    page = await open_console(browser, svc, token(tenant, "oz", ("operator", "auditor")), f"#/runs/{run}")
    status = page.locator("p.status")
    await expect(status).to_contain_text("not in the stream yet")  # the stream's first answer was a 404
    # When the run is requested and started
    await send(http, tenant, {"type": "RequestRun", "run_id": run, "agent_id": "late-bot"})
    await send(http, tenant, {"type": "StartRun", "run_id": run})
    # Then the tab asks again by itself, replays the run from its start and follows it live
    timeline = page.locator("table.timeline")
    await expect(timeline.locator("tr[data-type='run.requested']")).to_contain_text("agent late-bot")
    await expect(status).to_have_text("Following this run live.")
    await send(http, tenant, {"type": "StartStep", "run_id": run, "kind": "llm", "name": "plan"})
    await expect(timeline.locator("tr[data-type='run.step_started']")).to_contain_text("llm step “plan”")
    await expect(page.locator("dl.summary-grid")).to_contain_text("late-bot")
    streams = await page.evaluate("window.__streams")
    assert (streams["most"], streams["open"]) == (1, 1), streams
    await page.context.close()


async def checkpointed(http, tenant: str, seq: int) -> bool:
    response = await http.get("/v1/evidence/checkpoint", headers=auth(tenant, "auditor", "auditor"))
    return response.status_code == 200 and response.json()["size"] >= seq


async def test_an_approver_of_one_tenant_sees_nothing_of_another(svc, browser, http, tmp_path):
    # Given two tenants, each with a pending approval
    mine, theirs = unique("alpha-"), unique("bravo-")
    for tenant in (mine, theirs):
        await governed_tenant(http, tenant)
    my_ids = await pending_approval(http, mine, "rotate alpha keys")
    their_ids = await pending_approval(http, theirs, "wipe bravo backups")
    # When an approver (and auditor) of the first opens the queue, then the other's approval and run by id
    page = await open_console(browser, svc, token(mine, "ann", ("approver", "auditor")), "#/approvals")
    await expect(page.locator("li.card")).to_have_count(1)
    await expect(page.locator("li.card")).to_contain_text("rotate alpha keys")
    await shot(page, tmp_path, "isolation-queue")
    seen = [await page.locator("body").inner_text()]
    await page.goto(f"{svc.url}/console#/approvals/{their_ids['approval']}")
    await expect(page.locator("aside.detail")).to_contain_text("No such approval in this tenant.")
    seen.append(await page.locator("body").inner_text())
    # (their run, beside a run that exists nowhere, opened at once: the tab asks again for a run it is refused,
    # in case the stream is behind, and gives up after its bounded retries, the same way for both)
    nowhere = await open_console(browser, svc, token(mine, "ann", ("approver", "auditor")), f"#/runs/{uuid.uuid4()}")
    await page.goto(f"{svc.url}/console#/runs/{their_ids['run']}")
    for tab in (page, nowhere):
        await expect(tab.locator("p.status")).to_contain_text("not in the stream yet")
    for tab in (page, nowhere):
        await expect(tab.locator("p.status")).to_have_text("No such run in this tenant.", timeout=60_000)
        await expect(tab.locator("table.timeline tbody tr")).to_have_count(0)
        assert (await tab.evaluate("window.__streams"))["open"] == 0
    await nowhere.context.close()
    await page.goto(f"{svc.url}/console#/approvals")  # left and opened again: asked for anew, with every retry
    await page.goto(f"{svc.url}/console#/runs/{their_ids['run']}")
    await expect(page.locator("p.status")).to_contain_text("not in the stream yet")
    seen.append(await page.locator("body").inner_text())
    await shot(page, tmp_path, "isolation-their-run")
    # Then nothing of the other tenant is shown, not even that its ids exist
    for text in seen:
        assert "wipe bravo backups" not in text and theirs not in text and their_ids["tool_call"] not in text
    assert my_ids["run"][:8] in seen[0]
    html = await page.content()
    assert theirs not in html and "wipe bravo backups" not in html
    await page.context.close()


async def test_the_keyboard_reaches_approve_and_deny_and_denies_with_a_reason(svc, browser, http, tmp_path):
    # Given a pending approval, and an approver who signs in with the keyboard alone
    tenant = unique("kbd-")
    await governed_tenant(http, tenant)
    ids = await pending_approval(http, tenant, "drop the staging cache")
    context = await browser.new_context(viewport=DESKTOP)
    page = await context.new_page()
    await page.goto(f"{svc.url}/console")
    await expect(page.get_by_label("Bearer token")).to_be_focused()
    await page.keyboard.insert_text(token(tenant, "kim", ("approver",)))
    await page.keyboard.press("Tab")
    await expect(page.get_by_role("button", name="Sign in")).to_be_focused()
    await page.keyboard.press("Enter")
    await expect(page.locator("li.card")).to_contain_text("drop the staging cache")
    # When she presses Tab from where signing in leaves her (the page's heading), and Shift+Tab back from it
    async def walk(key: str, until: str) -> list[str]:
        names = []
        for _ in range(20):
            await page.keyboard.press(key)
            names.append(await page.evaluate("document.activeElement.getAttribute('aria-label') || "
                                             "document.activeElement.textContent.trim()"))
            if names[-1] == until:
                return names
        raise AssertionError(f"{until!r} was not reached by {key}: {names}")
    await expect(page.get_by_role("heading", name="Approvals")).to_be_focused()
    back = await walk("Shift+Tab", "Skip to content")
    await page.get_by_role("heading", name="Approvals").focus()
    forward = await walk("Tab", "Deny “drop the staging cache”")
    # Then focus goes through the header in reading order, and forward through the card to Approve, then Deny
    assert back == ["Sign out", "Approvals", "Skip to content"], back
    assert forward == ["drop the staging cache", "Approve “drop the staging cache”", "Deny “drop the staging cache”"], \
        forward
    # When she presses Enter on Deny, types a reason and confirms, all from the keyboard
    await page.keyboard.press("Enter")
    await expect(page.get_by_label("Reason (required)")).to_be_focused()
    await page.keyboard.type("not during the freeze")
    await page.keyboard.press("Tab")
    await expect(page.get_by_role("button", name="Confirm denial")).to_be_focused()
    await shot(page, tmp_path, "keyboard-deny")
    await page.keyboard.press("Enter")
    # Then the approval is denied with her reason, and leaves the queue
    await expect(page.locator(f"li.card[data-approval-id='{ids['approval']}']")).to_have_count(0)
    detail = (await http.get(f"/v1/approvals/{ids['approval']}", headers=auth(tenant, "kim", "approver"))).json()
    assert (detail["state"], detail["decided_by"], detail["decision_reason"]) == ("denied", "kim", "not during the freeze")
    await context.close()


@pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["1280px", "390px"])
async def test_every_page_renders_its_text_for_the_roles_that_open_it(svc, browser, http, tmp_path, viewport):
    tenant = unique("pages-")
    await governed_tenant(http, tenant)
    ids = await pending_approval(http, tenant, "reindex the search cluster")
    width = viewport["width"]
    # the sign-in page
    context = await browser.new_context(viewport=viewport)
    page = await context.new_page()
    await page.goto(f"{svc.url}/console")
    await expect(page.get_by_role("heading", name="runledger console")).to_be_visible()
    await expect(page.locator("main")).to_contain_text("sent in the Authorization header, never in a URL")
    assert await fits(page)
    await shot(page, tmp_path, f"signin-{width}")
    await context.close()
    # an operator: approvals (no decision: not an approver), runs, a run's timeline; no evidence, no ops
    page = await open_console(browser, svc, token(tenant, "olga", ("operator",)), "#/approvals", viewport)
    nav = page.get_by_role("navigation", name="Console")
    await expect(nav.get_by_role("link")).to_have_text(["Approvals", "Runs"])
    card = page.locator("li.card")
    await expect(card).to_contain_text("reindex the search cluster")
    await expect(card).to_contain_text("Needs the role approver.")
    await expect(card.get_by_role("button", name="Approve “reindex the search cluster”")).to_have_count(0)
    assert await fits(page)
    await shot(page, tmp_path, f"approvals-operator-{width}")
    await nav.get_by_role("link", name="Runs").click()
    await expect(page.get_by_role("heading", name="Runs")).to_be_visible()
    row = page.locator(f"tr[data-run-id='{ids['run']}']")
    await expect(row).to_contain_text("waiting_for_approval")
    await expect(row).to_contain_text("support-bot")
    assert await fits(page)
    await shot(page, tmp_path, f"runs-{width}")
    await row.get_by_role("link").click()
    await expect(page.get_by_role("heading", name=f"Run {ids['run'][:8]}…")).to_be_visible()
    for kind, text in (("run.requested", "agent support-bot, project helpdesk"), ("run.step_started", "cleanup"),
                       ("tool_call.policy_decided", "shell: REQUIRE_APPROVAL by default@1.0.0"),
                       ("approval.requested", "2 × approver")):
        await expect(page.locator(f"tr[data-type='{kind}']")).to_contain_text(text)
    await expect(page.locator(".summary-grid")).to_contain_text("0.0042")  # the run's cost (its entries: auditors)
    await expect(page.get_by_role("button", name=VERIFY)).to_have_count(0)  # checking proofs is for auditors
    assert await fits(page)
    await shot(page, tmp_path, f"timeline-{width}")
    await page.context.close()
    # an auditor: the run's timeline with its cost entries and proofs, and the tenant's evidence
    page = await open_console(browser, svc, token(tenant, "ada", ("auditor",)), f"#/runs/{ids['run']}", viewport)
    await expect(page.get_by_role("navigation", name="Console").get_by_role("link")).to_have_text(["Runs", "Evidence"])
    await expect(page.locator("tr[data-type='budget.cost_recorded']")).to_contain_text("0.0042 USD openai/gpt-x")
    await expect(page.get_by_role("button", name=VERIFY)).to_have_count(await page.locator("table.timeline tbody tr").count())
    await page.get_by_role("navigation", name="Console").get_by_role("link", name="Evidence").click()
    await expect(page.get_by_role("heading", name=f"Evidence of {tenant}")).to_be_visible()
    await expect(page.locator("main")).to_contain_text("Latest signed checkpoint")
    await expect(page.locator("main")).to_contain_text(f"runledger/local/{tenant}")
    await expect(page.locator("main")).to_contain_text("No verification is recorded on this tenant's chain yet")
    assert await fits(page)
    await shot(page, tmp_path, f"evidence-{width}")
    await page.context.close()
    # an admin of the ops tenant: lag per partition, live; a rebuild with its progress; verification; health
    page = await open_console(browser, svc, token(svc.settings.ops_tenant, "oncall", ("admin",)), "#/ops", viewport)
    page.on("dialog", lambda dialog: dialog.accept())
    await expect(page.get_by_role("heading", name="Ops")).to_be_visible()
    partitions = (await http.get("/v1/ops/projectors", headers=auth(svc.settings.ops_tenant, "oncall", "admin"))).json()
    await expect(page.locator("table.lag tbody tr")).to_have_count(len(partitions["partitions"]))
    await expect(page.locator("table.lag tbody tr[data-projector='runs'][data-partition='0'] .badge")).to_have_text(
        re.compile(r"^(OK|LAGGING)$"))  # (a model rebuilt here is not: the lag report reads the old generation)
    read_at = await page.locator("#lag-h + p").inner_text()
    await expect(page.locator("#lag-h + p")).not_to_have_text(read_at)  # it refreshes by itself
    await expect(page.locator("dl [data-role='processor']")).to_contain_text("ok")
    await expect(page.locator("main")).to_contain_text("No tenant is held in any read model.")
    await expect(page.locator("main")).to_contain_text("No verification has run in this process yet")
    model = "approvals" if viewport is DESKTOP else "governance"  # each a model not rebuilt before in this process
    await page.get_by_role("button", name=f"Rebuild {model}").click()
    await expect(page.locator(f".rebuild[data-projector='{model}'] .rebuild-state")).to_contain_text("done: ")
    assert await page.locator(f".rebuild[data-projector='{model}'] progress").evaluate("p => p.value === p.max")
    assert await fits(page)
    await shot(page, tmp_path, f"ops-{width}")
    await page.context.close()
