"""A real browser: Debian's Chromium runs the standard EventSource; the server dies and comes back;
the browser reconnects by itself with Last-Event-ID and shows every event once, in order."""
import shutil

from playwright.async_api import async_playwright

from infra.entry.client import LedgerClient
from tests.support import Service, make_settings, token, unique, wait_until

CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


async def send_runs(svc: Service, tenant: str, count: int) -> None:
    import httpx
    async with httpx.AsyncClient(base_url=svc.url, timeout=30) as http:
        client = LedgerClient(http, token(tenant))
        for i in range(count):
            assert (await client.send({"type": "RequestRun", "agent_id": f"agent-{i}"})).accepted


async def test_a_browser_reconnects_by_itself_and_shows_every_event_once_in_order():
    chromium = shutil.which("chromium")
    assert chromium, "Debian's chromium package is required (infra/local/test.sh installs it)"
    tenant = unique("tenant-")
    svc = Service(make_settings()).start()
    try:
        await svc.ready(90)
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS)
            page = await (await browser.new_context(bypass_csp=True)).new_page()  # lets the test evaluate JS
            await page.goto(f"{svc.url}/v1/streams/viewer?channel=tenant&last_event_id=0&access_token={token(tenant)}")
            await page.wait_for_function("document.getElementById('opens').textContent === '1'", timeout=30000)
            await send_runs(svc, tenant, 5)
            await page.wait_for_function("document.querySelectorAll('li[data-id]').length >= 5", timeout=30000)

            svc.kill()
            await page.wait_for_function("document.getElementById('state').textContent === 'reconnecting'", timeout=30000)
            svc.start()
            await svc.ready(90)
            await send_runs(svc, tenant, 5)
            await page.wait_for_function("document.querySelectorAll('li[data-id]').length >= 10", timeout=60000)
            await wait_until(lambda: page.evaluate("+document.getElementById('opens').textContent >= 2"), 30,
                             "the browser to report its reconnection")
            ids = await page.eval_on_selector_all("li[data-id]", "items => items.map(i => +i.dataset.id)")
            types = await page.eval_on_selector_all("li[data-id]", "items => items.map(i => i.dataset.type)")
            notices = await page.eval_on_selector_all("li.notice", "items => items.length")
            await page.screenshot(path=f"/tmp/runledger-browser-{tenant}.png")
            await browser.close()
    finally:
        svc.stop()
    assert ids == list(range(1, 11))
    assert types == ["run.requested"] * 10 and notices == 0
