"""The dashboard's live side in a real browser: a broadcast page reconnects by itself after
the server restarts and resumes where it stopped (nothing counted twice), a replay of 100,000
outcomes keeps the page bounded, a broadcast far along is followed from now on its stream's
opening counts, edit and recall run from the page with their outcomes live, and a photo
uploaded from the compose page is sent.
"""

from __future__ import annotations

import asyncio
import json
import re
import struct
import zlib
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from playwright.async_api import Locator, Page, Route, expect

from tests.fixtures.browser import (  # noqa: F401 -- fixtures "served", "stack", "ui"
    ADMIN_TOKEN,
    Dashboard,
    dashboard,
    dashboard_settings,
    served_fixture,
    stack_fixture,
    ui_fixture,
)
from tests.fixtures.rest import post
from tests.fixtures.services import free_port
from tests.fixtures.stack import Stack, open_backend, start_stack
from tgbroadcast.simulator import Simulator

pytestmark = pytest.mark.asyncio(loop_scope="module")

WAIT = 60_000
"""Milliseconds an expectation may wait on a loaded machine (a restart included)."""
AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def figure(page: Page, name: str) -> Locator:
    return page.locator(f'dd[data-figure="{name}"]')


async def confirm(page: Page, button: str, confirm_with: str) -> None:
    await page.get_by_role("button", name=button, exact=True).click()
    dialog = page.get_by_role("dialog")
    await expect(dialog).to_be_visible()
    await dialog.get_by_role("button", name=confirm_with).click()
    await expect(dialog).to_have_count(0)


async def test_a_broadcast_page_resumes_after_the_server_restarts(tmp_path: Path) -> None:
    """600 recipients at 25/s: the server stops mid-way and comes back on the same port; the
    page reconnects by itself with Last-Event-ID and counts each recipient once."""
    port = free_port()
    async with (
        Simulator() as simulator,
        open_backend("sqlite", tmp_path) as backend,
        dashboard(f"http://127.0.0.1:{port}") as ui,
    ):
        async with start_stack(backend, simulator, dashboard_settings(port)) as first:
            status, answer = await post(
                first,
                "/v1/broadcasts",
                {"message": "Hi", "user_ids": list(range(1, 601))},
                headers=AUTH,
            )
            assert status == 202, answer
            broadcast_id = answer["broadcast_id"]
            page = await ui.signed_in()
            await page.goto(f"{ui.url}#/broadcasts/{broadcast_id}")
            await expect(page.locator(".live-state")).to_have_text("● live", timeout=WAIT)
            await expect(figure(page, "sent")).not_to_have_text("0", timeout=WAIT)
        await expect(page.locator(".live-state")).to_have_text("reconnecting…", timeout=WAIT)
        async with start_stack(backend, simulator, dashboard_settings(port)):
            await expect(page.locator(".live-state")).to_have_text("finished", timeout=WAIT)
            await expect(page.locator(".page-head .badge")).to_have_text("completed")
            await expect(figure(page, "sent")).to_have_text("600")
            await expect(page.locator('tr[data-outcome="sent"] td').first).to_have_text("600")
            users = await page.locator(".feed tbody tr td:first-child").all_inner_texts()
            assert len(users) == 50
            assert len(set(users)) == 50
        await ui.close_pages()
    assert ui.errors == []


def replay(count: int) -> str:
    """An event stream of ``count`` outcomes, 1 in 10 blocked, over ``count / 1000`` seconds."""
    events = []
    sent = failed = 0
    for n in range(1, count + 1):
        outcome = "blocked" if n % 10 == 0 else "sent"
        sent, failed = (sent + 1, failed) if outcome == "sent" else (sent, failed + 1)
        progress = {"status": "running", "total": count, "sent": sent, "failed": failed}
        progress["pending"] = count - sent - failed
        millis = n  # one outcome per millisecond
        data = {
            "user_id": 10_000 + n,
            "outcome": outcome,
            "error": None if outcome == "sent" else "Forbidden: bot was blocked by the user",
            "message_id": n,
            "finished_at": f"2026-06-01T10:{millis // 60000:02d}:{millis // 1000 % 60:02d}."
            f"{millis % 1000:03d}000Z",
            "message_ids": [n],
            "progress": progress,
        }
        text = json.dumps(data, separators=(",", ":"))  # compact, as the service writes it
        events.append(f"id: s{n}.1.0\nevent: result\ndata: {text}\n\n")
    return ": broadcast 999999\n\n" + "".join(events)


async def test_a_replay_of_100000_outcomes_keeps_the_page_bounded(ui: Dashboard) -> None:
    """The service is stood in for (Playwright answers the broadcast's reads, a server of the
    test's its stream), so the page is fed 100,000 outcomes as a reconnect to a
    million-recipient broadcast would."""
    count = 100_000
    body = replay(count).encode()
    broadcast: dict[str, Any] = {
        "broadcast_id": 999999,
        "bot": "default",
        "status": "running",
        "total": count,
        "sent": 0,
        "failed": 0,
        "pending": count,
        "message": "Big news",
        "media_type": "text",
        "outcome_counts": {},
        "actions": [],
        "created_by": "operator",
        "content_version": 1,
    }
    streams: list[str] = []
    end = {
        "progress": {
            "status": "completed",
            "total": count,
            "sent": count * 9 // 10,
            "failed": count // 10,
            "pending": 0,
        }
    }

    async def serve_events(request: web.Request) -> web.Response:
        last = request.headers.get("Last-Event-ID", "")
        streams.append(last)
        if last:
            text = f"id: end\nevent: end\ndata: {json.dumps(end)}\n\n"
            return web.Response(text=text, content_type="text/event-stream")
        return web.Response(body=body, content_type="text/event-stream")

    # The replay (20 MB) comes over a socket from a server of the test's: handed to the
    # browser through Playwright's protocol, it took a minute on a loaded machine.
    app = web.Application()
    app.router.add_get("/events", serve_events)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", free_port())
    await site.start()

    async def events(route: Route) -> None:
        await route.continue_(url=f"{site.name}/events")

    async def details(route: Route) -> None:
        answer = dict(broadcast)
        if streams and streams[-1]:
            answer |= {
                "status": "completed",
                "sent": count * 9 // 10,
                "failed": count // 10,
                "pending": 0,
                "outcome_counts": {"sent": count * 9 // 10, "blocked": count // 10},
            }
        await route.fulfill(json=answer)

    try:
        page = await ui.signed_in()
        await page.route("**/v1/broadcasts/999999/events*", events)
        await page.route("**/v1/broadcasts/999999", details)
        await page.goto(f"{ui.url}#/broadcasts/999999")
        await expect(page.locator(".live-state")).to_have_text("finished", timeout=WAIT)
        await expect(figure(page, "sent")).to_have_text(f"{count * 9 // 10:,}")
        await expect(page.locator('tr[data-outcome="blocked"] td').first).to_have_text(
            f"{count // 10:,}"
        )
        await expect(page.locator(".feed tbody tr")).to_have_count(50)
        await expect(page.locator(".feed tbody tr").first).to_contain_text(str(10_000 + count))
        assert streams == ["", f"s{count}.1.0"]  # the reconnect resumed after the last outcome
        chart = page.locator("canvas.chart")
        await expect(chart).to_have_attribute(
            "aria-label", re.compile("over 101 seconds: peak 1000.0")
        )
    finally:
        await runner.cleanup()


async def test_a_broadcast_far_along_is_followed_from_now_on_its_openings_counts(
    ui: Dashboard,
) -> None:
    """A broadcast past the replay limit, being recalled while its last sends land, is followed
    from now, and the breakdowns count on from the stream's opening, not from the broadcast read
    before it: what was recorded in between (here 3 sent, 1 blocked, 2 recalls and 2 edits) is
    in the opening's counts, and would be in neither. The edit breakdown is the latest edit's:
    it starts afresh when a newer edit's outcomes come, and a late one of an older is left
    out."""
    broadcast: dict[str, Any] = {
        "broadcast_id": 999996, "bot": "default", "status": "recalling", "total": 50_000,
        "sent": 20_000, "failed": 1_000, "pending": 29_000, "message": "Big news",
        "media_type": "text", "outcome_counts": {"sent": 20_000, "blocked": 1_000},
        "actions": [], "created_by": "operator",
        "recall_at": "2026-06-01T10:00:00.000000Z", "recalled": 500,
        "recall_counts": {"deleted": 500},
        "edit_at": "2026-06-01T09:30:00.000000Z", "content_version": 2, "edited": 10,
        "edit_counts": {"edited": 10},
    }  # fmt: skip
    progress = {
        "status": "recalling", "total": 50_000, "sent": 20_003, "failed": 1_001, "recalled": 502,
    }  # fmt: skip
    opening = {
        "progress": progress, "outcome_counts": {"sent": 20_003, "blocked": 1_001},
        "recall_counts": {"deleted": 502}, "edit_counts": {"edited": 12}, "content_version": 2,
    }  # fmt: skip
    events = [f"id: s500.20003.1001.502~21004.502\nevent: status\ndata: {json.dumps(opening)}\n\n"]
    for n in range(1, 8):
        progress = {**progress, "sent": 20_003 + n, "pending": 50_000 - 20_003 - n - 1_001}
        data = {
            "user_id": 70_000 + n, "outcome": "sent", "error": None, "message_id": n,
            "finished_at": f"2026-06-01T10:00:0{n}.000000Z", "message_ids": [n],
            "progress": progress,
        }  # fmt: skip
        text = json.dumps(data, separators=(",", ":"))  # compact, as the service writes it
        events.append(f"id: s{500 + n}.{20_003 + n}.1001\nevent: result\ndata: {text}\n\n")
    for n in range(1, 3):
        progress = {**progress, "recalled": 502 + n}
        data = {
            "user_id": 60_000 + n, "outcome": "sent", "error": None, "message_id": n,
            "finished_at": "2026-06-01T09:00:00.000000Z", "message_ids": [n],
            "recall": "deleted", "progress": progress,
        }  # fmt: skip
        text = json.dumps(data, separators=(",", ":"))
        events.append(f"id: s{507 + n}.20010.1001.{502 + n}\nevent: recall\ndata: {text}\n\n")
    # Edit outcomes: one more of version 2, a late one of version 1 (not the latest edit's),
    # then two of a newer edit, version 3: the breakdown counts the latest edit's alone.
    for n, version in enumerate((2, 1, 3, 3), start=1):
        data = {
            "user_id": 80_000 + n, "outcome": "sent", "error": None, "message_id": n,
            "finished_at": "2026-06-01T09:00:00.000000Z", "message_ids": [n],
            "content_version": version, "edit": "edited", "edit_error": None,
            "progress": progress,
        }  # fmt: skip
        text = json.dumps(data, separators=(",", ":"))
        events.append(f"id: s{509 + n}.20010.1001.504\nevent: edit\ndata: {text}\n\n")
    asked: list[str] = []

    async def serve_events(request: web.Request) -> web.StreamResponse:
        asked.append(request.query_string)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write("".join(events).encode())
        await held.wait()  # open, as a broadcast still sending
        return response

    held = asyncio.Event()
    app = web.Application()
    app.router.add_get("/events", serve_events)
    runner = web.AppRunner(app, shutdown_timeout=0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", free_port())
    await site.start()

    async def stream(route: Route) -> None:
        query = route.request.url.partition("?")[2]
        await route.continue_(url=f"{site.name}/events" + (f"?{query}" if query else ""))

    try:
        page = await ui.signed_in()
        await page.route("**/v1/broadcasts/999996/events*", stream)
        await page.route("**/v1/broadcasts/999996", lambda route: route.fulfill(json=broadcast))
        await page.goto(f"{ui.url}#/broadcasts/999996")
        await expect(figure(page, "sent")).to_have_text("20,010", timeout=WAIT)
        delivery = page.locator('table[data-kind="delivery"]')
        await expect(delivery.locator('tr[data-outcome="sent"] td').first).to_have_text("20,010")
        await expect(delivery.locator('tr[data-outcome="blocked"] td').first).to_have_text("1,001")
        recall = page.locator('table[data-kind="recall"]')
        await expect(recall.locator('tr[data-outcome="deleted"] td').first).to_have_text("504")
        edit = page.locator('table[data-kind="edit"]')
        await expect(edit.locator('tr[data-outcome="edited"] td').first).to_have_text("2")
        assert asked == ["from=now"]
    finally:
        held.set()
        await runner.cleanup()


async def test_edit_and_recall_from_the_page(ui: Dashboard, stack: Stack) -> None:
    status, answer = await post(
        stack, "/v1/broadcasts", {"message": "Draft", "user_ids": [801, 802, 803]}, headers=AUTH
    )
    assert status == 202, answer
    broadcast_id = answer["broadcast_id"]
    page = await ui.signed_in()
    await page.goto(f"{ui.url}#/broadcasts/{broadcast_id}")
    await expect(page.locator(".page-head .badge")).to_have_text("completed", timeout=WAIT)
    await page.get_by_role("button", name="Edit…").click()
    dialog = page.get_by_role("dialog")
    text = dialog.get_by_label("New text or caption")
    await text.fill(" ")  # refused: the dialog comes back with the error at its field
    await dialog.get_by_role("button", name="Edit every message").click()
    await expect(text).to_have_attribute("aria-invalid", "true")
    await expect(text).to_be_focused()
    await expect(dialog.locator(".field-error:not([hidden])")).to_contain_text("message")
    await text.fill("Final text")
    await dialog.get_by_role("button", name="Edit every message").click()
    await expect(
        page.locator('table[data-kind="edit"] tr[data-outcome="edited"] td').first
    ).to_have_text("3", timeout=WAIT)
    edits = [c for c in stack.simulator.calls if c.method == "editMessageText"]
    assert {c.params["chat_id"] for c in edits} == {801, 802, 803}
    await confirm(page, "Recall", "Recall")
    await expect(page.locator(".page-head .badge")).to_have_text("recalled", timeout=WAIT)
    await expect(
        page.locator('table[data-kind="recall"] tr[data-outcome="deleted"] td').first
    ).to_have_text("3")
    history = page.locator(".history")
    await expect(history).to_contain_text("operator edited it")
    await expect(history).to_contain_text("operator recalled it")


def tiny_png() -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0\0\0\0"))
        + chunk(b"IEND", b"")
    )


async def test_a_photo_uploaded_from_the_compose_page_is_sent(ui: Dashboard, stack: Stack) -> None:
    page = await ui.signed_in()
    await page.get_by_role("link", name="Compose").click()
    await page.get_by_label("Kind").select_option("photo")
    await page.get_by_label("Upload a file").check()
    await page.get_by_label("File", exact=True).set_input_files(
        {"name": "dot.png", "mimeType": "image/png", "buffer": tiny_png()}
    )
    await page.get_by_label("Text", exact=True).fill("A dot")
    await page.get_by_label("User ids").fill("901")
    await page.get_by_role("button", name="Send broadcast").click()
    await expect(page.locator(".page-head .badge")).to_have_text("completed", timeout=WAIT)
    (call,) = [
        c for c in stack.simulator.calls if c.method == "sendPhoto" and c.params["chat_id"] == 901
    ]
    assert call.params["caption"] == "A dot"


async def test_the_keyboard_reaches_every_control_and_escape_backs_out(
    ui: Dashboard, stack: Stack
) -> None:
    page = await ui.page()
    await page.goto(ui.url)
    await expect(page.get_by_label("API token")).to_be_focused()
    await page.keyboard.type(ADMIN_TOKEN)
    await page.keyboard.press("Enter")
    await expect(page.get_by_role("heading", name="Broadcasts", level=1)).to_be_visible()
    status, answer = await post(
        stack, "/v1/broadcasts", {"message": "Hi", "user_ids": [951]}, headers=AUTH
    )
    assert status == 202
    await page.goto(f"{ui.url}#/broadcasts/{answer['broadcast_id']}")
    recall = page.get_by_role("button", name="Recall")
    await expect(page.locator(".page-head .badge")).to_have_text("completed", timeout=WAIT)
    await recall.focus()
    await page.keyboard.press("Enter")
    dialog = page.get_by_role("dialog")
    await expect(dialog.get_by_role("button", name="Back")).to_be_focused()
    await page.keyboard.press("Escape")
    await expect(dialog).to_have_count(0)
    await expect(page.locator(".page-head .badge")).to_have_text("completed")


async def test_an_album_composed_on_the_page_is_sent_as_one(ui: Dashboard, stack: Stack) -> None:
    page = await ui.signed_in()
    await page.get_by_role("link", name="Compose").click()
    await page.get_by_label("Kind").select_option("album")
    await expect(page.get_by_label("Text", exact=True)).to_be_hidden()
    for item in (1, 2):
        url = page.get_by_label(f"Item {item} URL or file_id")
        await url.fill(f"https://example.com/pictures/{item}.jpg")
    await page.get_by_label("Item 1 caption").fill("Two pictures")
    await page.get_by_label("User ids").fill("902")
    await page.get_by_role("button", name="Send broadcast").click()
    await expect(page.locator(".page-head .badge")).to_have_text("completed", timeout=WAIT)
    calls = [c for c in stack.simulator.calls if c.params.get("chat_id") == 902]
    assert [c.method for c in calls] == ["sendMediaGroup"]
    media = calls[0].params["media"]
    assert [m["media"] for m in media] == [
        "https://example.com/pictures/1.jpg",
        "https://example.com/pictures/2.jpg",
    ]


async def test_per_variant_figures_and_clicks_are_shown_when_reported(ui: Dashboard) -> None:
    """The broadcast's answer is stood in for with the variants and clicks fields (#15)."""
    variant = {"weight": 1, "language_codes": [], "media_type": "text", "media_url": ""}
    broadcast: dict[str, Any] = {
        "broadcast_id": 999998, "bot": "default", "status": "completed", "total": 4,
        "sent": 4, "failed": 0, "pending": 0, "message": "A", "media_type": "text",
        "outcome_counts": {"sent": 4}, "actions": [], "created_by": "operator",
        "content_version": 1, "track_clicks": True, "clicks": 3, "clickers": 2,
        "variants": [
            {**variant, "name": "A", "message": "Buy now", "sent": 2, "failed": 0, "clicks": 2},
            {**variant, "name": "B", "message": "Last chance", "sent": 2, "failed": 0, "clicks": 1},
        ],
        "link_clicks": [{"variant": "A", "link": 0, "url": "https://example.com", "clicks": 2}],
    }  # fmt: skip
    end = {"progress": {"status": "completed", "total": 4, "sent": 4, "failed": 0, "pending": 0}}
    page = await ui.signed_in()
    await page.route(
        "**/v1/broadcasts/999998/events*",
        lambda route: route.fulfill(
            content_type="text/event-stream",
            body=f"id: end\nevent: end\ndata: {json.dumps(end)}\n\n",
        ),
    )
    await page.route("**/v1/broadcasts/999998", lambda route: route.fulfill(json=broadcast))
    await page.goto(f"{ui.url}#/broadcasts/999998")
    section = page.get_by_role("region", name="Variants and clicks")
    await expect(section.locator(".clicks")).to_contain_text("3 clicks by 2 recipients")
    rows = section.locator('table[data-variants="variants"] tbody tr')
    await expect(rows).to_have_count(2)
    await expect(section.locator('tr[data-variant="A"]')).to_contain_text("Buy now")
    headers = await section.locator('table[data-variants="variants"] th').all_inner_texts()
    assert [h.lower() for h in headers[:5]] == [
        "name",
        "weight",
        "language codes",
        "sent",
        "failed",
    ]
    await expect(section.locator('table[data-variants="link_clicks"] tbody tr')).to_have_count(1)


async def test_an_admin_adds_and_deletes_a_bot(ui: Dashboard) -> None:
    shop_token = "111111111:AAshopTokenSecretPart_0123456789abcdef"
    page = await ui.signed_in()
    await page.get_by_role("link", name="Bots").click()
    await page.get_by_label("Name").fill("shop")
    await page.get_by_label("Bot token").fill(shop_token)
    await page.get_by_label("Rate limit", exact=True).fill("30")
    await page.get_by_role("button", name="Add bot").click()
    row = page.locator('tr[data-bot="shop"]')
    await expect(row).to_contain_text("30/s", timeout=WAIT)
    await expect(row).to_contain_text("111111111")
    await expect(page.get_by_label("Bot token")).to_have_value("")
    assert shop_token.split(":", 1)[1] not in await page.content()
    await confirm(page, "Delete bot shop", "Delete")
    await expect(row).to_have_count(0)


async def test_variants_composed_on_the_page_are_reported_per_variant(
    ui: Dashboard, stack: Stack
) -> None:
    users = [{"id": 9101, "language_code": "de"}, {"id": 9102, "language_code": "en"}]
    status, _ = await post(stack, "/v1/users", {"users": users}, headers=AUTH)
    assert status == 200
    page = await ui.signed_in()
    await page.get_by_role("link", name="Compose").click()
    await page.get_by_label("Text", exact=True).fill("Hello")
    await page.get_by_role("button", name="Add a variant").click()
    await page.get_by_label("Variant B name").fill("german")
    await page.get_by_label("Variant B languages").fill("de")
    await page.get_by_label("Variant B text").fill("Hallo")
    await page.get_by_label("User ids").fill("9101 9102")
    await page.get_by_label("As received by user id").fill("9101")
    await page.get_by_role("button", name="Preview", exact=True).click()
    await expect(page.locator(".tg-text")).to_have_text("Hallo")  # their language decides
    await page.get_by_label("Variant", exact=True).select_option("A")
    await page.get_by_role("button", name="Preview", exact=True).click()
    await expect(page.locator(".tg-text")).to_have_text("Hello")
    await page.get_by_role("button", name="Send broadcast").click()
    await expect(page.locator(".page-head .badge")).to_have_text("completed", timeout=WAIT)
    table = page.locator('table[data-variants="variants"]')
    await expect(table.locator('tr[data-variant="german"]')).to_contain_text("Hallo")
    await expect(table.locator('tr[data-variant="A"]')).to_contain_text("Hello")
    await expect(page.get_by_role("button", name="Edit…")).to_be_disabled()
    await page.get_by_label("As received by user id").fill("9101")
    await page.get_by_role("button", name="Show").click()
    await expect(page.locator(".as-received .tg-text")).to_have_text("Hallo")
    await expect(page.locator(".as-received")).to_contain_text("Variant german")
    texts = {c.params["chat_id"]: c.params["text"] for c in stack.simulator.calls
             if c.method == "sendMessage" and c.params["chat_id"] in (9101, 9102)}  # fmt: skip
    assert texts == {9101: "Hallo", 9102: "Hello"}


async def test_the_event_parser_takes_crlf_comments_and_multi_line_data(ui: Dashboard) -> None:
    """Server-Sent Events as any conforming server may write them, split at odd places."""
    broadcast: dict[str, Any] = {
        "broadcast_id": 999997, "bot": "default", "status": "running", "total": 2, "sent": 0,
        "failed": 0, "pending": 2, "message": "Hi", "media_type": "text", "outcome_counts": {},
        "actions": [], "created_by": "operator", "content_version": 1,
    }  # fmt: skip

    def result(user: int, sent: int) -> str:
        at = f"2026-06-01T10:00:0{user}.000000Z"
        head = {"user_id": user, "outcome": "sent", "error": None, "message_id": user,
                "finished_at": at, "message_ids": [user]}  # fmt: skip
        progress = {"status": "running", "total": 2, "sent": sent, "failed": 0, "pending": 2 - sent}
        first = json.dumps(head, separators=(",", ":"))[:-1] + ","
        return f'data: {first}\r\ndata: "progress":{json.dumps(progress)}}}\r\n'

    end = {"progress": {"status": "completed", "total": 2, "sent": 2, "failed": 0, "pending": 0}}
    body = (
        ": broadcast 999997\r\n\r\n"
        f"id: c1\r\nevent: result\r\n{result(1, 1)}\r\n"
        ": heartbeat\r\n\r\n"
        f"event: result\rid: c2\r{result(2, 2)}\r\n"
        f"id: end\nevent: end\ndata:{json.dumps(end)}\n\n"
    )
    page = await ui.signed_in()
    await page.route(
        "**/v1/broadcasts/999997/events*",
        lambda route: route.fulfill(content_type="text/event-stream", body=body),
    )
    await page.route("**/v1/broadcasts/999997", lambda route: route.fulfill(json=broadcast))
    await page.goto(f"{ui.url}#/broadcasts/999997")
    await expect(page.locator(".live-state")).to_have_text("finished")
    await expect(page.locator(".feed tbody tr")).to_have_count(2)
    await expect(page.locator('tr[data-outcome="sent"] td').first).to_have_text("2")
    await expect(figure(page, "pending")).to_have_text("0")
