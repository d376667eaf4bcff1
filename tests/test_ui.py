"""The dashboard (``/ui/``) in a real browser: Debian's chromium driven by Playwright, against
the whole service sending to the simulator.

One stack and one browser serve the module (each test opens its own browser context, so its
own sessionStorage); tests wait on what the page shows (Playwright's ``expect``), never on a
clock. Broadcasts a test needs are sent by the test itself, through the UI or REST.
"""

from __future__ import annotations

import asyncio
import csv
import io
import logging
import re
from pathlib import Path

import pytest
from playwright.async_api import Locator, Page, expect

from tests.fixtures.browser import (  # noqa: F401 -- fixtures "served", "stack", "ui"
    ADMIN_TOKEN,
    NO_VALUE,
    PHONE,
    RATE_LIMIT,
    READER_TOKEN,
    Dashboard,
    served_fixture,
    stack_fixture,
    ui_fixture,
)
from tests.fixtures.rest import get, post
from tests.fixtures.stack import Stack

pytestmark = pytest.mark.asyncio(loop_scope="module")

WAIT = 30_000
"""Milliseconds an expectation may wait on a loaded machine."""


async def send(stack: Stack, user_ids: list[int], message: str = "Hello") -> int:
    status, answer = await post(stack, "/v1/broadcasts", {"message": message, "user_ids": user_ids})
    assert status == 202, answer
    return int(answer["broadcast_id"])


def figure(page: Page, name: str) -> Locator:
    return page.locator(f'dd[data-figure="{name}"]')


async def open_broadcast(ui: Dashboard, page: Page, broadcast_id: int) -> None:
    await page.goto(f"{ui.url}#/broadcasts/{broadcast_id}")
    await expect(page.get_by_role("heading", name=f"Broadcast #{broadcast_id}")).to_be_visible()


async def confirm(page: Page, button: str, confirm_with: str) -> None:
    await page.get_by_role("button", name=button, exact=True).click()
    dialog = page.get_by_role("dialog")
    await expect(dialog).to_be_visible()
    await dialog.get_by_role("button", name=confirm_with).click()
    await expect(dialog).to_have_count(0)


async def test_sign_in_compose_send_and_watch_it_complete_live(
    ui: Dashboard, stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    page = await ui.signed_in()
    await page.get_by_role("link", name="Compose").click()
    await page.get_by_label("Text", exact=True).fill("Hello from the dashboard")
    await page.get_by_label("User ids").fill("111 222 333")
    await page.get_by_role("button", name="Send broadcast").click()
    await expect(page.get_by_role("heading", name="Broadcast #")).to_be_visible()
    broadcast_id = int(page.url.rsplit("/", 1)[1])
    await expect(page.locator(".page-head .badge")).to_have_text("completed", timeout=WAIT)
    await expect(figure(page, "sent")).to_have_text("3")
    await expect(page.locator(".feed tbody tr")).to_have_count(3)
    await expect(page.locator('tr[data-outcome="sent"] td').first).to_have_text("3")
    sent = {c.params["chat_id"] for c in stack.simulator.calls if c.method == "sendMessage"}
    assert {111, 222, 333} <= sent
    # Who did what: the token's name, never the token.
    await expect(page.locator(".history")).to_contain_text("operator sent it")
    # The token is in this tab's sessionStorage only: never in a URL, a cookie or the page.
    assert ADMIN_TOKEN not in page.url
    assert await page.context.cookies() == []
    assert ADMIN_TOKEN not in await page.content()
    kept = await page.evaluate("sessionStorage.getItem('tgbroadcast.token')")
    assert kept == ADMIN_TOKEN
    # Nor in any log line of the service: the access log names the token.
    access = [r for r in caplog.records if r.name == "tgbroadcast.access"]
    assert {getattr(r, "token_name", None) for r in access} >= {"operator"}
    assert all(ADMIN_TOKEN not in f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    await page.get_by_role("link", name="Broadcasts", exact=True).click()
    row = page.locator("tr", has=page.get_by_role("link", name=f"#{broadcast_id}", exact=True))
    await expect(row.locator(".badge")).to_have_text("completed")


async def test_pause_resume_and_cancel_with_confirmation(ui: Dashboard, stack: Stack) -> None:
    """1,000 recipients at :data:`RATE_LIMIT` per second take 40 s: time to pause it mid-way."""
    broadcast_id = await send(stack, list(range(10_000, 11_000)))
    page = await ui.signed_in()
    await open_broadcast(ui, page, broadcast_id)
    await expect(page.locator(".live-state")).to_have_text("● live", timeout=WAIT)
    await expect(figure(page, "sent")).not_to_have_text("0", timeout=WAIT)
    await expect(figure(page, "rate")).to_contain_text(f"of {RATE_LIMIT}/s", timeout=WAIT)
    await confirm(page, "Pause", "Pause")
    await expect(page.locator(".page-head .badge")).to_have_text("paused")
    _, paused = await get(stack, f"/v1/broadcasts/{broadcast_id}")
    assert paused["status"] == "paused"
    await expect(page.get_by_role("button", name="Resume")).to_be_enabled()
    await confirm(page, "Resume", "Resume")
    await expect(page.locator(".page-head .badge")).to_have_text("running")
    done = int((await figure(page, "sent").inner_text()).replace(",", ""))
    await expect(figure(page, "sent")).not_to_have_text(str(done), timeout=WAIT)
    await confirm(page, "Cancel", "Cancel")
    await expect(page.locator(".page-head .badge")).to_have_text("cancelled")
    history = page.locator(".history")
    for line in ("operator paused it", "operator resumed it", "operator cancelled it"):
        await expect(history).to_contain_text(line)
    _, cancelled = await get(stack, f"/v1/broadcasts/{broadcast_id}")
    assert cancelled["status"] == "cancelled"
    assert [a["action"] for a in cancelled["actions"]] == ["pause", "resume", "cancel"]


async def test_a_refused_send_shows_each_error_at_its_field(ui: Dashboard) -> None:
    page = await ui.signed_in()
    await page.get_by_role("link", name="Compose").click()
    await page.get_by_label("Kind").select_option("photo")
    await page.get_by_label("Text", exact=True).fill("A caption")
    await page.get_by_label("User ids").fill("111")
    await page.get_by_role("button", name="Send broadcast").click()
    url = page.get_by_label("Media URL or file_id")
    await expect(url).to_have_attribute("aria-invalid", "true")
    error = page.locator(f"#{await url.get_attribute('id')}-error")
    await expect(error).to_contain_text("media_url: is required")
    await expect(url).to_be_focused()
    # A chat id that is not a number is refused before anything is sent, at the same field.
    await url.fill("https://example.com/cat.jpg")
    await page.get_by_label("User ids").fill("111 eleven")
    await page.get_by_role("button", name="Send broadcast").click()
    await expect(page.get_by_label("User ids")).to_have_attribute("aria-invalid", "true")
    await expect(url).not_to_have_attribute("aria-invalid", "true")
    assert "#/compose" in page.url


async def test_the_preview_is_personalized_for_the_chosen_user(ui: Dashboard, stack: Stack) -> None:
    status, _ = await post(stack, "/v1/users", {"users": [{"id": 4242, "first_name": "Ada"}]})
    assert status == 200
    page = await ui.signed_in()
    await page.get_by_role("link", name="Compose").click()
    await page.get_by_label("Text", exact=True).fill("Hi <b>{first_name}</b>!")
    await page.get_by_label("Formatting").select_option("html")
    await page.get_by_label("Personalize").check()
    await page.get_by_label("As received by user id").fill("4242")
    await page.get_by_role("button", name="Preview", exact=True).click()
    bubble = page.locator(".tg-text")
    await expect(bubble).to_have_text("Hi Ada!")
    await expect(bubble.locator("strong")).to_have_text("Ada")


async def test_the_csv_export_downloads_every_recipient(ui: Dashboard, stack: Stack) -> None:
    broadcast_id = await send(stack, [501, 502])
    page = await ui.signed_in()
    await open_broadcast(ui, page, broadcast_id)
    await expect(page.locator(".page-head .badge")).to_have_text("completed", timeout=WAIT)
    async with page.expect_download() as downloading:
        await page.get_by_role("button", name="Export CSV").click()
    download = await downloading.value
    assert download.suggested_filename == f"broadcast-{broadcast_id}.csv"
    text = (await asyncio.to_thread(Path(await download.path()).read_bytes)).decode()
    rows = list(csv.DictReader(io.StringIO(text)))
    assert sorted((r["user_id"], r["outcome"]) for r in rows) == [("501", "sent"), ("502", "sent")]


async def test_a_token_without_a_scope_is_told_why(ui: Dashboard, stack: Stack) -> None:
    broadcast_id = await send(stack, [601])
    page = await ui.signed_in(READER_TOKEN)
    nav = page.get_by_role("navigation", name="Main")
    await expect(nav.get_by_role("link", name="Broadcasts")).to_be_visible()
    for hidden in ("Compose", "Users", "Bots"):
        await expect(nav.get_by_role("link", name=hidden)).to_be_hidden()
    await expect(page.get_by_role("link", name="New broadcast")).to_have_count(0)
    await page.goto(f"{ui.url}#/compose")
    alert = page.get_by_role("alert")
    await expect(alert).to_contain_text("lacks the scope broadcasts:send")
    await open_broadcast(ui, page, broadcast_id)
    await expect(page.get_by_role("button", name="Pause")).to_have_count(0)
    await expect(page.locator(".toolbar")).to_contain_text("no scope broadcasts:control")
    # What the server refuses is explained too: a 403 from the API itself.
    explained = await page.evaluate(
        """async () => {
            const { api } = await import('./api.js');
            try { await api('/v1/users'); } catch (e) { return e.explain(); }
        }"""
    )
    assert explained.startswith("Not allowed for this API token: this token lacks the scope")


async def test_the_page_offers_only_the_moves_the_service_takes(
    ui: Dashboard, stack: Stack
) -> None:
    """A scheduled broadcast cannot be paused (only cancelled); a move the page offered on
    stale figures (the broadcast was recalled elsewhere) is refused, and the page then shows
    the broadcast as it is."""
    status, answer = await post(
        stack,
        "/v1/broadcasts",
        {"message": "later", "user_ids": [611], "send_at": "2099-01-01T00:00:00Z"},
    )
    assert status == 202, answer
    page = await ui.signed_in()
    await open_broadcast(ui, page, int(answer["broadcast_id"]))
    await expect(page.locator(".page-head .badge")).to_have_text("scheduled")
    await expect(page.get_by_role("button", name="Pause", exact=True)).to_be_disabled()
    await expect(page.get_by_role("button", name="Cancel", exact=True)).to_be_enabled()

    finished = await send(stack, [612])
    await open_broadcast(ui, page, finished)
    await expect(page.locator(".page-head .badge")).to_have_text("completed", timeout=WAIT)
    # Its stream has ended: the page does not learn of the recall made behind its back.
    await expect(page.locator(".live-state")).to_have_text("finished", timeout=WAIT)
    assert (await post(stack, f"/v1/broadcasts/{finished}/recall", None))[0] == 200
    await confirm(page, "Recall", "Recall")  # refused: it is recalling already
    await expect(page.locator(".page-head .badge")).to_have_text(
        re.compile("recalling|recalled"), timeout=WAIT
    )
    await expect(page.get_by_role("button", name="Recall", exact=True)).to_be_disabled()


async def test_a_token_refused_by_the_event_stream_signs_out(ui: Dashboard, stack: Stack) -> None:
    """A 401 on the broadcast's live stream (the token revoked meanwhile) signs out as any
    other 401 does; the page stood on figures no longer live."""
    broadcast_id = await send(stack, [621])
    page = await ui.signed_in()
    await page.route(
        re.compile(r".*/v1/broadcasts/\d+/events.*"),
        lambda route: route.fulfill(
            status=401,
            content_type="application/problem+json",
            body='{"title": "Unauthorized", "status": 401, "detail": "the token is not accepted"}',
        ),
    )
    await open_broadcast(ui, page, broadcast_id)
    await expect(page.get_by_label("API token")).to_be_visible(timeout=WAIT)
    assert await page.evaluate("sessionStorage.length") == 0


async def test_a_wrong_token_is_refused_at_sign_in(ui: Dashboard) -> None:
    page = await ui.page()
    await page.goto(ui.url)
    await page.get_by_label("API token").fill("not-a-token-of-this-service")
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("alert")).to_have_text(
        "This token is not accepted by the service."
    )
    assert await page.evaluate("sessionStorage.length") == 0


async def test_users_import_with_progress_and_search_by_tag(ui: Dashboard) -> None:
    page = await ui.signed_in()
    await page.get_by_role("link", name="Users").click()
    rows = "id,first_name,language_code,tags\n7001,Grace,en,vip beta\n7002,Alan,en,beta\n"
    await page.get_by_label("CSV file").set_input_files(
        {"name": "users.csv", "mimeType": "text/csv", "buffer": rows.encode()}
    )
    await page.get_by_role("button", name="Import").click()
    await expect(page.get_by_text("Imported 2 users.")).to_be_visible(timeout=WAIT)
    await expect(page.locator("progress")).to_have_attribute("value", "100")
    await page.get_by_label("Tag", exact=True).fill("vip")
    await page.get_by_role("button", name="Search").click()
    await expect(page.locator("tbody tr")).to_have_count(1)
    await expect(page.locator('tr[data-user="7001"]')).to_contain_text("Grace")
    await expect(page.locator('tr[data-user="7001"]')).to_contain_text("active")


async def test_bots_are_listed_for_an_admin(ui: Dashboard) -> None:
    page = await ui.signed_in()
    await page.get_by_role("link", name="Bots").click()
    row = page.locator('tr[data-bot="default"]')
    await expect(row).to_contain_text(f"{RATE_LIMIT}")
    await expect(row).to_contain_text("config")


async def test_every_page_fits_a_375_px_screen(ui: Dashboard, stack: Stack) -> None:
    broadcast_id = await send(stack, [701, 702])
    page = await ui.signed_in(viewport=PHONE)
    for route, heading in (
        ("#/broadcasts", "Broadcasts"),
        (f"#/broadcasts/{broadcast_id}", f"Broadcast #{broadcast_id}"),
        ("#/compose", "Compose a broadcast"),
        ("#/users", "Users"),
        ("#/bots", "Bots"),
    ):
        await page.goto(ui.url + route)
        await expect(page.get_by_role("heading", name=heading, exact=True)).to_be_visible()
        width = await page.evaluate("document.documentElement.scrollWidth")
        assert width <= PHONE["width"], (route, width)


async def test_the_list_follows_a_running_broadcast_live(ui: Dashboard, stack: Stack) -> None:
    """300 recipients at 25/s, sent once the page is open: its row appears and moves while the
    page stays (no Refresh), a pause and a resume made elsewhere show, then it completes."""
    page = await ui.signed_in()
    await expect(page.locator(".list")).to_have_attribute("data-stream", "live")
    broadcast_id = await send(stack, list(range(20_000, 20_300)))
    row = page.locator("tr", has=page.get_by_role("link", name=f"#{broadcast_id}", exact=True))
    await expect(row.locator(".badge")).to_have_text(re.compile("queued|running"))
    await expect(row.locator("td[data-label=Rate]")).to_contain_text(
        f"of {RATE_LIMIT}/s", timeout=WAIT
    )
    await expect(row.locator("td[data-label=ETA]")).not_to_have_text(NO_VALUE)
    assert (await post(stack, f"/v1/broadcasts/{broadcast_id}/pause", None))[0] == 200
    await expect(row.locator(".badge")).to_have_text("paused")
    assert (await post(stack, f"/v1/broadcasts/{broadcast_id}/resume", None))[0] == 200
    await expect(row.locator(".badge")).to_have_text("running")
    await expect(row.locator(".badge")).to_have_text("completed", timeout=WAIT)
    await expect(row.locator(".counts")).to_have_text("300 / 300")
    await expect(row.locator("[role=progressbar]")).to_have_attribute("aria-valuenow", "300")


async def test_an_older_broadcast_moving_into_the_status_filter_takes_its_place(
    ui: Dashboard, stack: Stack
) -> None:
    """The list filtered by ``paused``, two broadcasts sending: the newer one paused elsewhere
    appears, then the older one paused after it appears below it (newest first), while the
    page stays."""
    older = await send(stack, list(range(30_000, 31_000)))
    newer = await send(stack, list(range(31_000, 32_000)))
    page = await ui.signed_in()
    await expect(page.locator(".list")).to_have_attribute("data-stream", "live")
    await page.get_by_label("Status").select_option("paused")

    def row(broadcast_id: int) -> Locator:
        link = page.get_by_role("link", name=f"#{broadcast_id}", exact=True)
        return page.locator("tbody tr", has=link)

    try:
        await expect(page.locator(".hint[role=status]")).not_to_have_text("Loading…")
        await expect(row(newer)).to_have_count(0)
        assert (await post(stack, f"/v1/broadcasts/{newer}/pause", None))[0] == 200
        await expect(row(newer).locator(".badge")).to_have_text("paused")
        assert (await post(stack, f"/v1/broadcasts/{older}/pause", None))[0] == 200
        await expect(row(older).locator(".badge")).to_have_text("paused")
        links = await page.locator("tbody tr th a").all_inner_texts()
        assert links.index(f"#{newer}") < links.index(f"#{older}"), links
    finally:
        for broadcast_id in (older, newer):  # the module's other tests share the bot's rate
            await post(stack, f"/v1/broadcasts/{broadcast_id}/cancel", None)


async def test_a_scheduled_paid_broadcast_to_a_tag_keeps_its_budget(
    ui: Dashboard, stack: Stack
) -> None:
    users = [{"id": 8001, "tags": ["gold"]}, {"id": 8002, "tags": ["gold"]}, {"id": 8003}]
    status, _ = await post(stack, "/v1/users", {"users": users})
    assert status == 200
    page = await ui.signed_in()
    await page.get_by_role("link", name="Compose").click()
    await page.get_by_label("Text", exact=True).fill("Gold members first")
    await page.get_by_label("Users by tags and language").check()
    await page.get_by_label("Tags (any of)").fill("gold")
    await page.get_by_label("Send at").fill("2030-01-01T09:30")
    await page.get_by_label("Paid broadcast").check()
    await page.get_by_label("Stars budget").fill("50")
    await page.get_by_role("button", name="Send broadcast").click()
    await expect(page.locator(".page-head .badge")).to_have_text("scheduled", timeout=WAIT)
    broadcast_id = int(page.url.rsplit("/", 1)[1])
    meta = page.locator("dl.meta")
    await expect(meta).to_contain_text("Scheduled for")
    await expect(meta).to_contain_text("budget 50 Stars")
    await expect(figure(page, "total")).to_have_text("2")
    _, scheduled = await get(stack, f"/v1/broadcasts/{broadcast_id}")
    assert (scheduled["max_stars"], scheduled["allow_paid_broadcast"]) == (50, True)
    assert scheduled["send_at"].startswith("2030-01-01T")
    await confirm(page, "Cancel", "Cancel")
    await expect(page.locator(".page-head .badge")).to_have_text("cancelled")
