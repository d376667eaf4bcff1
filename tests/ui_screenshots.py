"""``make screenshots``: a picture of every page of the dashboard, saved under ``docs/ui/``.

Runs the whole service against the simulator (as the browser tests do), fills it with users
and broadcasts — finished ones with some refusals, one running at the bot's limit — and
saves each page from the system chromium: desktop in light and dark, and a 375 px phone.

    .venv/bin/python -m tests.ui_screenshots [folder]
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path

from playwright.async_api import Page, expect

from tests.fixtures.browser import (
    ADMIN_TOKEN,
    NO_VALUE,
    PHONE,
    Dashboard,
    dashboard,
    dashboard_stack,
)
from tests.fixtures.rest import post
from tests.fixtures.stack import Stack
from tgbroadcast.simulator.chats import ChatState

USERS_CSV = "\n".join(
    [
        "id,username,first_name,last_name,language_code,tags",
        "111,ada,Ada,Lovelace,en,vip beta",
        "222,grace,Grace,Hopper,en,beta",
        "333,alan,Alan,Turing,en,",
        "444,,Emmy,Noether,de,vip",
        "555,linus,Linus,,fi,beta",
        "666,,Margaret,Hamilton,en,vip",
    ]
)


async def seed(stack: Stack) -> int:
    """Users, two finished broadcasts and one running; the running one's id. Sent with the
    operator's token, so "who did what" names it."""
    auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    for chat, state in ((333, ChatState.BLOCKED), (2005, ChatState.DEACTIVATED)):
        stack.simulator.chats.declare(chat, state)
    for chat in range(3000, 3012):
        stack.simulator.chats.declare(chat, ChatState.BLOCKED)
    headers = {**auth, "Content-Type": "text/csv"}
    status, _ = await post(stack, "/v1/users/import", None, data=USERS_CSV, headers=headers)
    assert status == 200
    sends = [
        {"message": "Welcome aboard, {first_name}!", "personalize": True, "all_users": True},
        {
            "variants": [
                {"name": "short", "message": "<b>Sale</b>: -20% today", "parse_mode": "html"},
                {
                    "name": "long",
                    "message": "<b>Spring sale</b>: 20% off everything until Sunday.",
                    "parse_mode": "html",
                    "weight": 2,
                },
            ],
            "user_ids": list(range(2000, 2150)),
        },
        {
            "message": "Our new app is out: update now!",
            "user_ids": list(range(3000, 6000)),
        },
    ]
    ids = []
    for body in sends:
        status, answer = await post(stack, "/v1/broadcasts", body, headers=auth)
        assert status == 202, answer
        ids.append(int(answer["broadcast_id"]))
    return ids[-1]


async def shoot(ui: Dashboard, page: Page, route: str, path: Path, ready: str) -> None:
    await page.goto(ui.url + route)
    await expect(page.locator(ready).first).to_be_visible(timeout=30_000)
    await page.screenshot(path=str(path), full_page=True)
    print(f"saved {path}")


async def main(folder: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        async with dashboard_stack(Path(tmp)) as stack, dashboard(stack.http_url) as ui:
            running = await seed(stack)
            page = await ui.signed_in()
            sign_in = await ui.page()
            await shoot(ui, sign_in, "", folder / "sign-in.png", "form.signin")
            row = page.locator("tr", has=page.get_by_role("link", name=f"#{running}"))
            await page.goto(ui.url + "#/broadcasts")
            await expect(row.locator("td[data-label=Rate]")).to_contain_text("of", timeout=30_000)
            await page.screenshot(path=str(folder / "broadcasts.png"), full_page=True)
            print(f"saved {folder / 'broadcasts.png'}")
            await page.goto(f"{ui.url}#/broadcasts/{running}")
            await expect(page.locator('dd[data-figure="eta"]')).not_to_have_text(
                NO_VALUE, timeout=30_000
            )
            await expect(page.locator(".feed tbody tr")).to_have_count(50, timeout=30_000)
            await page.screenshot(path=str(folder / "broadcast.png"), full_page=True)
            print(f"saved {folder / 'broadcast.png'}")
            await shoot(ui, page, "#/compose", folder / "compose.png", "form.compose")
            await page.get_by_label("Text", exact=True).fill(
                "Hi <b>{first_name}</b>, our <i>spring sale</i> starts today!"
            )
            await page.get_by_label("Formatting").select_option("html")
            await page.get_by_label("Personalize").check()
            await page.get_by_label("URL buttons", exact=True).fill(
                "Open the shop | https://example.com/shop"
            )
            await page.get_by_label("User ids").fill("111 222 444")
            await page.get_by_label("As received by user id").fill("111")
            await page.get_by_role("button", name="Preview", exact=True).click()
            await expect(page.locator(".tg-text")).to_contain_text("Hi Ada")
            await page.screenshot(path=str(folder / "compose.png"), full_page=True)
            await shoot(ui, page, "#/users", folder / "users.png", "table.users")
            await shoot(ui, page, "#/bots", folder / "bots.png", "table.bots")
            dark = await ui.signed_in(dark=True)
            await dark.goto(f"{ui.url}#/broadcasts/{running - 1}")
            await expect(dark.locator(".feed tbody tr").first).to_be_visible(timeout=30_000)
            await expect(dark.locator(".page-head .badge")).to_have_text("completed")
            await dark.screenshot(path=str(folder / "broadcast-dark.png"), full_page=True)
            print(f"saved {folder / 'broadcast-dark.png'}")
            phone = await ui.signed_in(viewport=PHONE)
            await shoot(ui, phone, "#/broadcasts", folder / "phone.png", "table.broadcasts")
            assert ui.errors == [], ui.errors


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/ui")
    target.mkdir(parents=True, exist_ok=True)
    asyncio.run(main(target))
