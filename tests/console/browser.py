"""Real headless Chromium (Debian's `chromium`) driven by Playwright, for the console tests."""

from __future__ import annotations

import os
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from playwright.async_api import Browser, Page, async_playwright

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
DOCS = Path(__file__).resolve().parents[2] / "docs"
SCRATCH = Path(tempfile.gettempdir()) / "mmhub-screenshots"

# Every visible form control without a label (its own <label>, or aria-label), as "tag#id".
UNLABELLED = """() => [...document.querySelectorAll('input, select, textarea')]
  .filter(el => el.type !== 'hidden')
  .filter(el => !(el.labels && el.labels.length) && !el.getAttribute('aria-label'))
  .map(el => el.tagName.toLowerCase() + '#' + (el.id || el.name))"""


@asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    """The browser; never `playwright install`: the system's Chromium is used."""
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield browser
        finally:
            await browser.close()


async def unlabelled(page: Page) -> list[str]:
    """The page's form controls that have no label."""
    found: list[str] = await page.evaluate(UNLABELLED)
    return found


async def screenshot(page: Page, name: str) -> None:
    """Save the page as console-<name>.png: into docs/ (shown in the README) when
    MMHUB_SCREENSHOTS=1, else into a temporary folder, so that `make test` leaves the checkout as
    it found it (the pixels differ from run to run)."""
    folder = DOCS if os.environ.get("MMHUB_SCREENSHOTS") == "1" else SCRATCH
    folder.mkdir(exist_ok=True)
    await page.screenshot(path=str(folder / f"console-{name}.png"), full_page=True)
