"""Click tracking end to end (#15.5): with ``track_clicks`` every recipient's URL buttons and
text links (HTML ones too, personalized ones too) lead to ``{server.public_url}/c/{code}``,
a code of that recipient and link that answers 302 to the original without a token (and
outside the allow-list); each recipient's first click on each link is counted once —
GetBroadcast (REST and gRPC), ListDeliveries, the CSV, the live stream and the replay of the
finished broadcast show it — and a code expires with ``tracking.retention_days``. Forged
codes are 404."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import grpc
import pytest
from sqlalchemy import update

from tests.fixtures.grpc_details import bad_request
from tests.fixtures.held_calls import HoldingSimulator
from tests.fixtures.nats import wait_until
from tests.fixtures.stack import Backend, Stack, on_sqlite, start_stack
from tests.fixtures.watching import watch_into
from tests.test_recall import rest
from tgbroadcast.core.store.engine import create_engine
from tgbroadcast.core.store.tables import broadcasts
from tgbroadcast.simulator import Simulator
from tgbroadcast.v1 import broadcast_pb2 as pb

PUBLIC = "https://go.example.com"
TRACKING = {"TGB_SERVER_PUBLIC_URL": PUBLIC}
ANN, BOB, CID = 9501, 9502, 9503
TEXT = (
    'Read <a href="https://news.example/?who={first_name|you}">the news</a>, '
    '<b>then</b> <a href="https://more.example/">more</a>'
)
BUTTONS = {
    "rows": [
        {
            "buttons": [
                {"text": "Shop", "url": "https://shop.example/sale"},
                {"text": "Later", "callback_data": "later"},
            ]
        }
    ]
}


def tracked_links(call: Any) -> list[str]:
    """A send's links in tracking order: URL buttons, then text links."""
    markup = call.params["reply_markup"]
    markup = json.loads(markup) if isinstance(markup, str) else markup
    entities = call.params["entities"]
    entities = json.loads(entities) if isinstance(entities, str) else entities
    buttons = [b["url"] for row in markup["inline_keyboard"] for b in row if "url" in b]
    return buttons + [e["url"] for e in entities if e["type"] == "text_link"]


async def open_link(stack: Stack, link: str) -> tuple[int, str]:
    """Open a tracked link as a browser would (no token, no redirect followed)."""
    assert link.startswith(PUBLIC + "/c/")
    path = link.removeprefix(PUBLIC)
    async with (
        aiohttp.ClientSession() as session,
        session.get(stack.http_url + path, allow_redirects=False) as response,
    ):
        assert response.headers["Cache-Control"] == "no-store"
        if response.status == 302:
            return 302, response.headers["Location"]
        assert response.content_type == "application/problem+json"
        return response.status, (await response.json())["detail"]


async def test_tracked_links_redirect_count_once_and_stream(backend: Backend) -> None:
    async with (
        HoldingSimulator() as simulator,
        start_stack(backend, simulator, TRACKING) as stack,
    ):
        code, _ = await rest(
            stack, "POST", "/v1/users", {"users": [{"id": ANN, "first_name": "Ann"}]}
        )
        assert code == 200
        held = simulator.hold("sendMessage", after=2)
        body = {
            "user_ids": [ANN, BOB, CID],
            "message": TEXT,
            "parse_mode": "html",
            "personalize": True,
            "reply_markup": BUTTONS,
            "track_clicks": True,
        }
        code, accepted = await rest(stack, "POST", "/v1/broadcasts", body)
        assert code == 202, accepted
        broadcast_id = accepted["broadcast_id"]
        streamed: list[pb.WatchBroadcastResponse] = []
        watching = asyncio.create_task(watch_into(streamed, stack, broadcast_id))
        await held.holding()  # two sent, the third held: the broadcast is running

        async def both_recorded() -> bool:  # a click streams once its send is recorded
            return sum(m.HasField("result") for m in streamed) >= 2

        await wait_until(both_recorded)
        sent = {int(c.params["chat_id"]): c for c in simulator.calls if c.method == "sendMessage"}
        assert len(sent) == 2
        first, second = sorted(sent)
        links = {user: tracked_links(call) for user, call in sent.items()}
        assert all(len(found) == 3 for found in links.values())
        assert len({link for found in links.values() for link in found}) == 6  # all distinct
        call = sent[first]
        assert "parse_mode" not in call.params  # sent with the entities Telegram would parse
        assert call.params["text"] == "Read the news, then more"
        # Telegram previews the original first link, never a recipient's tracked one.
        preview = call.params["link_preview_options"]
        preview = json.loads(preview) if isinstance(preview, str) else preview
        assert preview["url"].startswith("https://news.example/?who=")
        # Telegram's link fetcher and HEAD requests are redirected but count nothing.
        async with (
            aiohttp.ClientSession() as session,
            session.head(
                stack.http_url + links[first][2].removeprefix(PUBLIC), allow_redirects=False
            ) as head,
            session.get(
                stack.http_url + links[first][2].removeprefix(PUBLIC),
                headers={"User-Agent": "TelegramBot (like TwitterBot)"},
                allow_redirects=False,
            ) as fetcher,
        ):
            assert (head.status, fetcher.status) == (302, 302)
        # Opened without a token: 302 to the original (personalized for its recipient).
        status, location = await open_link(stack, links[first][1])
        assert status == 302
        name = "Ann" if first == ANN else "you"
        assert location == f"https://news.example/?who={name}"
        assert await open_link(stack, links[first][1]) == (302, location)  # counted once
        assert await open_link(stack, links[first][0]) == (302, "https://shop.example/sale")
        assert await open_link(stack, links[second][2]) == (302, "https://more.example/")
        # A forged or altered code opens nothing.
        forged = links[first][0][:-2] + ("AA" if not links[first][0].endswith("AA") else "BB")
        assert (await open_link(stack, forged))[0] == 404
        assert (await open_link(stack, PUBLIC + "/c/not-a-code"))[0] == 404
        held.release()
        await asyncio.wait_for(watching, 60)
        # Finished, it is replayed: each recipient's clicks on its one result.
        replayed = await watch_into([], stack, broadcast_id)
        async with (
            aiohttp.ClientSession(headers=stack.auth) as session,
            session.get(f"{stack.http_url}/v1/broadcasts/{broadcast_id}/events") as events,
        ):
            sse = [
                json.loads(line.removeprefix("data: "))
                for line in (await events.text()).splitlines()
                if line.startswith("data: ")
            ]
        _, report = await rest(stack, "GET", f"/v1/broadcasts/{broadcast_id}")
        _, page = await rest(stack, "GET", f"/v1/broadcasts/{broadcast_id}/deliveries")
        _, text = await rest(stack, "GET", f"/v1/broadcasts/{broadcast_id}/deliveries.csv")
        async with stack.stub() as stub:
            got = await stub.GetBroadcast(
                pb.GetBroadcastRequest(broadcast_id=broadcast_id), metadata=stack.metadata
            )
    clicks = [m.result for m in streamed if m.result.click]
    assert sorted((r.user_id, r.click) for r in clicks) == sorted(
        [
            (first, location),
            (first, "https://shop.example/sale"),
            (second, "https://more.example/"),
        ]
    )
    assert streamed[-1].progress.status == pb.BROADCAST_STATUS_COMPLETED
    third = ({ANN, BOB, CID} - {first, second}).pop()
    opened = {first: 2, second: 1, third: 0}
    assert {m.result.user_id: m.result.clicks for m in replayed[:-1]} == opened
    assert {e["user_id"]: e.get("clicks", 0) for e in sse if "user_id" in e} == opened
    assert (report["track_clicks"], report["clicks"], report["clickers"]) == (True, 3, 2)
    assert report["link_clicks"] == [
        {"variant": None, "link": 0, "url": "https://shop.example/sale", "clicks": 1},
        {"variant": None, "link": 1, "url": "https://news.example/?who=you", "clicks": 1},
        {"variant": None, "link": 2, "url": "https://more.example/", "clicks": 1},
    ]
    assert {r["user_id"]: r["clicks"] for r in page["results"]} == opened
    rows = list(csv.DictReader(io.StringIO(text, newline="")))
    assert {int(r["user_id"]): int(r["clicks"]) for r in rows}[first] == 2
    assert (got.broadcast.clicks, got.broadcast.clickers) == (3, 2)
    assert [(k.link, k.clicks) for k in got.broadcast.link_clicks] == [(0, 1), (1, 1), (2, 1)]


@on_sqlite
async def test_expiry_and_variant_clicks(backend: Backend, simulator: Simulator) -> None:
    async with start_stack(backend, simulator, TRACKING) as stack:
        body = {
            "user_ids": [9601, 9602],
            "track_clicks": True,
            "variants": [
                {"name": "a", "message": "A", "reply_markup": BUTTONS},
                {
                    "name": "b",
                    "message": "B",
                    "reply_markup": {
                        "rows": [{"buttons": [{"text": "B", "url": "https://b.example/"}]}]
                    },
                },
            ],
        }
        code, accepted = await rest(stack, "POST", "/v1/broadcasts", body)
        assert code == 202, accepted
        broadcast_id = accepted["broadcast_id"]
        streamed: list[pb.WatchBroadcastResponse] = []
        await watch_into(streamed, stack, broadcast_id)
        variant_of = {m.result.user_id: m.result.variant for m in streamed if m.HasField("result")}
        calls = {int(c.params["chat_id"]): c for c in simulator.calls if c.method == "sendMessage"}
        own = {"a": "https://shop.example/sale", "b": "https://b.example/"}
        for user, call in calls.items():  # each variant's code leads to its own link
            markup = call.params["reply_markup"]
            markup = json.loads(markup) if isinstance(markup, str) else markup
            link = markup["inline_keyboard"][0][0]["url"]
            assert await open_link(stack, link) == (302, own[variant_of[user]])
        _, report = await rest(stack, "GET", f"/v1/broadcasts/{broadcast_id}")
        per_variant = {v["name"]: v["clicks"] for v in report["variants"]}
        expected = {"a": 0, "b": 0}
        for user in calls:
            expected[variant_of[user]] += 1
        assert per_variant == expected
        clicked = {(k["variant"], k["clicks"]) for k in report["link_clicks"]}
        assert clicked == set(expected.items())
        # Past tracking.retention_days (90 by default) from its start a code answers 410.
        engine = create_engine(stack.settings.database.url)
        try:
            async with engine.begin() as connection:
                await connection.execute(
                    update(broadcasts)
                    .where(broadcasts.c.id == broadcast_id)
                    .values(
                        created_at=datetime.now(UTC) - timedelta(days=92),
                        started_at=datetime.now(UTC) - timedelta(days=91),
                    )
                )
        finally:
            await engine.dispose()
        status, detail = await open_link(stack, link)
        assert (status, detail) == (410, "this link has expired")


@on_sqlite
async def test_tracking_needs_the_public_url(stack: Stack) -> None:
    body = {"message": "x", "user_ids": [1], "track_clicks": True}
    code, problem = await rest(stack, "POST", "/v1/broadcasts", body)
    assert code == 400
    assert [e["field"] for e in problem["errors"]] == ["track_clicks"]
    assert "server.public_url" in problem["errors"][0]["message"]
    async with stack.stub() as stub:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.SendMessage(
                pb.SendMessageRequest(message="x", user_ids=[1], track_clicks=True),
                metadata=stack.metadata,
            )
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "track_clicks" in bad_request(caught.value)
    async with (
        aiohttp.ClientSession() as session,
        session.get(stack.http_url + "/c/abc", allow_redirects=False) as response,
    ):
        assert response.status == 404


@on_sqlite
async def test_links_open_from_outside_the_allow_list(
    backend: Backend, simulator: Simulator
) -> None:
    outside = {**TRACKING, "TGB_SERVER_ALLOWED_NETWORKS": "10.0.0.0/8"}
    async with (
        start_stack(backend, simulator, outside) as stack,
        aiohttp.ClientSession() as session,
    ):
        async with session.get(stack.http_url + "/v1/broadcasts", headers=stack.auth) as api:
            assert api.status == 403  # this client is not on the allow-list
        async with session.get(stack.http_url + "/c/abc", allow_redirects=False) as link:
            assert link.status == 404  # served (nothing behind this code), not refused


@on_sqlite
async def test_a_link_that_is_not_http_is_never_a_redirect(
    backend: Backend, simulator: Simulator
) -> None:
    async with start_stack(backend, simulator, TRACKING) as stack:
        body = {
            "user_ids": [9701],
            "track_clicks": True,
            "parse_mode": "html",
            "message": '<a href="javascript:alert(1)">x</a> <a href="https://ok.example/">y</a>',
        }
        code, accepted = await rest(stack, "POST", "/v1/broadcasts", body)
        assert code == 202, accepted
        await watch_into([], stack, accepted["broadcast_id"])
        (call,) = [c for c in simulator.calls if c.method == "sendMessage" and c.ok]
        entities = call.params["entities"]
        entities = json.loads(entities) if isinstance(entities, str) else entities
        scripted, fine = [e["url"] for e in entities if e["type"] == "text_link"]
        assert (await open_link(stack, scripted))[0] == 404
        assert await open_link(stack, fine) == (302, "https://ok.example/")
