"""Headless Chromium on the console, as tests/e2e/test_console.py drives it (and this benchmark times it).

Debian's `chromium` with the flags that keep it off the network (../shared INFRA-NOTES: without the
background-networking flags it floods a closed network with refused connections); a tab signed in by
pasting the token into the form, as a person does. OBSERVE is an init script that notes, from the page's
own clock, when the queue first shows a card (ms after navigation start) and when each timeline row
appears (epoch ms), so the benchmark reads times the page saw rather than the round trips of the
automation protocol.
"""
from __future__ import annotations

import shutil

CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]

OBSERVE = """(() => {
  const seen = window.__seen = {firstCard: null, rows: {}};
  const epoch = () => performance.timeOrigin + performance.now();
  new MutationObserver((mutations) => {
    const now = performance.now();
    if (seen.firstCard === null && document.querySelector("li.card")) seen.firstCard = now;
    for (const mutation of mutations) {
      for (const node of mutation.addedNodes) {
        if (node.nodeType === 1 && node.matches("table.timeline tr[data-chain-seq]")) {
          seen.rows[node.dataset.chainSeq] ??= epoch();
        }
      }
    }
  }).observe(document, {childList: true, subtree: true});
})();"""


def chromium() -> str:
    path = shutil.which("chromium")
    if not path:
        raise RuntimeError("Debian's chromium package is required (infra/local/test.sh installs it)")
    return path


async def launch(playwright):
    """Headless Chromium, off the network."""
    return await playwright.chromium.launch(executable_path=chromium(), args=CHROMIUM_FLAGS)


async def sign_in(page, url: str, bearer: str) -> None:
    """Open the console and sign in with the token (pasted into the form, as a person does)."""
    await page.goto(f"{url}/console")
    await page.get_by_label("Bearer token").fill(bearer)
    await page.get_by_role("button", name="Sign in").click()
    await page.get_by_role("button", name="Sign out").wait_for()
