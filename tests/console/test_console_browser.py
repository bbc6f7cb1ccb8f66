"""The support story of the runbooks, in real headless Chromium against a running hub.

erp fails (503) until it recovers: a viewer looks (personal data masked, no buttons), an operator
finds the dead deliveries of erp from the last 2 h, reads why one failed, bulk-replays them after a
dry run and watches them turn delivered, pauses and resumes erp, and finds it all in the audit log.
Every page is checked for labels on its form controls and for Content-Security-Policy violations.
"""

from __future__ import annotations

import asyncio
import copy
import re
from collections.abc import AsyncIterator, Callable

import pytest
from playwright.async_api import Page, expect
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.settings import Settings
from tests.admin.support import OPERATOR_TOKEN, VIEWER_TOKEN, admin_hub, delivery_rows, execute
from tests.console.browser import chromium, screenshot, unlabelled
from tests.console.support import EMAIL, PHONE, LiveHub, contact_with_pii, live_hub, post_webhook
from tests.dispatch.harness import deal
from tests.fake_target import FakeTarget

pytestmark = pytest.mark.skipif(
    not __import__("pathlib").Path("/usr/bin/chromium").exists(),
    reason="make test installs chromium (TEST_APT_TOOLS)",
)


@pytest.fixture
async def hub(
    settings_for: Callable[..., Settings], engine: AsyncEngine, redis: object
) -> AsyncIterator[tuple[LiveHub, FakeTarget]]:
    """erp on a fake target that answers 503; ww and log on one that answers 200."""
    async with FakeTarget() as erp, FakeTarget() as others:
        config = copy.deepcopy(admin_hub(others.url))
        config["targets"]["erp"]["url"] = f"{erp.url}/erp"
        erp.set_default(503, {"error": "ERP is restarting"})
        async with live_hub(settings_for(config)) as live:
            yield live, erp


async def _wait_for(engine: AsyncEngine, target: str, status: str, count: int) -> None:
    """Until `count` deliveries to target are in status (the dispatcher runs in the background)."""
    query = text("SELECT count(*) FROM deliveries WHERE target = :target AND status = :status")
    for _ in range(300):
        async with engine.connect() as conn:
            found = (await conn.execute(query, {"target": target, "status": status})).scalar_one()
        if found == count:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"never {count} {status} deliveries to {target}")


async def _arrange(live: LiveHub, engine: AsyncEngine) -> str:
    """Four deals to erp end dead (one received 3 h ago), a contact with a phone is delivered to ww."""
    old = await post_webhook(live, deal(40, ts=40))
    await _wait_for(engine, "erp", "dead", 1)
    await execute(
        engine, "UPDATE events SET received_at = now() - interval '3 hours' WHERE id = :id", id=old
    )
    for n in (41, 42, 43):
        await post_webhook(live, deal(n, ts=n))
    contact = await post_webhook(live, contact_with_pii())
    await _wait_for(engine, "erp", "dead", 4)
    await _wait_for(engine, "ww", "delivered", 1)
    return contact


def _watch_csp(page: Page) -> list[str]:
    """Collects console errors: a CSP violation (inline script or style, a foreign source) shows here."""
    errors: list[str] = []
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    return errors


async def _log_in_with_keyboard(page: Page, url: str, token: str) -> None:
    """Reach the token field with Tab only, type the token, press Enter."""
    await page.goto(f"{url}/console/login")
    await page.locator("body").focus()
    for _ in range(10):
        if await page.evaluate("document.activeElement && document.activeElement.id") == "token":
            break
        await page.keyboard.press("Tab")
    assert await page.evaluate("document.activeElement.id") == "token"
    await page.keyboard.type(token)
    await page.keyboard.press("Enter")
    await page.wait_for_url(re.compile(r"/console$"))


async def _check_labels(page: Page) -> None:
    assert await unlabelled(page) == [], page.url


async def test_the_support_story(hub: tuple[LiveHub, FakeTarget], engine: AsyncEngine) -> None:
    live, erp = hub
    contact = await _arrange(live, engine)
    contact_delivery = next(str(r.id) for r in await delivery_rows(engine) if r.target == "ww")
    async with chromium() as browser:
        page = await browser.new_page(viewport={"width": 1280, "height": 860})
        csp_errors = _watch_csp(page)

        # A viewer: personal data masked, no action buttons.
        await _log_in_with_keyboard(page, live.url, VIEWER_TOKEN)
        await expect(page.get_by_text("vera (viewer, personal data masked)")).to_be_visible()
        await page.goto(f"{live.url}/console/events/{contact}")
        body = await page.content()
        assert PHONE not in body and EMAIL not in body and "@example.ru" in body
        await page.goto(f"{live.url}/console/deliveries/{contact_delivery}")
        await expect(page.get_by_role("button", name="Replay")).to_have_count(0)
        await page.goto(f"{live.url}/console")
        await expect(page.get_by_role("button", name="Pause")).to_have_count(0)
        await page.get_by_role("button", name="Log out").click()
        await expect(page.get_by_role("heading", name="Log in")).to_be_visible()

        # An operator finds the dead deliveries of erp from the last 2 h with the filter form.
        await _log_in_with_keyboard(page, live.url, OPERATOR_TOKEN)
        await _check_labels(page)
        await expect(page.get_by_role("button", name="Pause")).to_have_count(3)  # erp, log, ww
        await page.get_by_role("link", name="Deliveries").click()
        await page.get_by_label("Status").select_option("dead")
        await page.get_by_label("Target").select_option("erp")
        await page.get_by_label("Since").fill("2h")
        await page.get_by_role("button", name="Search").click()
        await page.wait_for_url(re.compile(r"status=dead&target=erp.*since=2h"))
        rows = page.locator("table.deliveries tbody tr")
        await expect(rows).to_have_count(3)  # the one from 3 h ago is not among them
        await _check_labels(page)
        await screenshot(page, "deliveries")

        # Open one and read why it failed.
        await page.get_by_role("link", name="Open").first.click()
        await expect(page.locator(".why")).to_contain_text("503")
        await expect(page.locator("table.attempts tbody tr")).to_have_count(2)
        await expect(page.get_by_text('"specversion": "1.0"')).to_be_visible()
        await _check_labels(page)
        await screenshot(page, "delivery")
        await page.go_back()

        # The target recovers; a dry run first, then the bulk replay with a live progress bar.
        erp.set_default(200)
        await page.get_by_role("link", name="Replay all matching…").click()
        await expect(page.locator("#matched")).to_have_text("3")
        await _check_labels(page)
        await page.get_by_label("Reason").fill("ERP back after restart")
        await page.get_by_role("button", name="Replay 3 deliveries").click()
        await expect(page.locator(".job-status")).to_have_text("finished", timeout=15_000)
        await expect(page.locator("#progress-bar")).to_have_attribute("value", "3")
        await screenshot(page, "replay")

        # Watch them turn delivered.
        await page.get_by_role("link", name="See these deliveries now").click()
        for _ in range(100):
            if await page.locator("table.deliveries .status.delivered").count() == 3:
                break
            await asyncio.sleep(0.2)
            await page.reload()
        await expect(page.locator("table.deliveries tbody .status.delivered")).to_have_count(3)
        await _wait_for(engine, "erp", "delivered", 3)
        assert len([r for r in erp.requests if r.path == "/erp"]) >= 3 * 2 + 1 + 3

        # Pause and resume erp from the overview.
        await page.get_by_role("link", name="Overview").click()
        row = page.locator("tr", has=page.get_by_role("link", name="erp", exact=True))
        await row.get_by_label("Reason").fill("ERP maintenance window")
        await row.get_by_role("button", name="Pause").click()
        await expect(page.get_by_role("status")).to_contain_text("erp paused")
        await expect(row.get_by_text("paused by oscar")).to_be_visible()
        await screenshot(page, "overview")
        await row.get_by_label("Reason").fill("maintenance over")
        await row.get_by_role("button", name="Resume").click()
        await expect(page.get_by_role("status")).to_contain_text("erp resumed")

        # All of it is in the audit log.
        await page.get_by_role("link", name="Audit").click()
        await page.get_by_label("Search").fill("erp")
        await page.get_by_role("button", name="Search").click()
        audit = page.locator("table.audit tbody")
        for words in (
            "bulk_replay",
            "ERP back after restart",
            "pause",
            "ERP maintenance window",
            "resume",
        ):
            await expect(audit).to_contain_text(words)
        await _check_labels(page)
        await screenshot(page, "audit")
        assert csp_errors == []


async def test_keyboard_reaches_every_control_in_order(hub: tuple[LiveHub, FakeTarget]) -> None:
    live, _ = hub
    async with chromium() as browser:
        page = await browser.new_page()
        await _log_in_with_keyboard(page, live.url, OPERATOR_TOKEN)
        await page.goto(f"{live.url}/console/deliveries")
        await page.locator("body").focus()
        await page.keyboard.press("Tab")
        assert await page.evaluate("document.activeElement.textContent") == "Skip to content"
        await page.keyboard.press("Enter")
        assert await page.evaluate("document.activeElement.id") == "main"
        reached = []
        for _ in range(12):
            await page.keyboard.press("Tab")
            reached.append(
                await page.evaluate(
                    "document.activeElement.id || document.activeElement.textContent"
                )
            )
        assert reached[:9] == [
            "f-status",
            "f-target",
            "f-source",
            "f-type",
            "f-subject",
            "f-since",
            "f-until",
            "f-q",
            "Search",
        ]
        await page.keyboard.press("Shift+Tab")  # and back
        await _check_labels(page)
