"""Files Telegram does not fetch by URL (a .docx document, a .tgs sticker, a video note) are
fetched by the service once, uploaded once, and sent by file_id after: the fetcher against a
real HTTP server, the request's validation, and a broadcast end to end."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from aiohttp import web

from tests.fixtures.rest import post
from tests.fixtures.stack import open_backend, start_stack
from tests.fixtures.telegram import BOT_ID
from tests.fixtures.watching import assert_watch_complete, watch
from tgbroadcast.core.domain.errors import InvalidArgument, PermanentError, TransientError
from tgbroadcast.core.domain.model import MediaType
from tgbroadcast.core.rules.validation import SendRequest, validate_send
from tgbroadcast.simulator import Simulator
from tgbroadcast.worker import fetching
from tgbroadcast.worker.fetching import MediaFetcher

DOCX = b"PK\x03\x04 a word document"
DOCX_TYPE = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"


@asynccontextmanager
async def file_server() -> AsyncIterator[tuple[str, list[str]]]:
    """A local HTTP server of test files; its base URL and the paths it was asked for."""
    asked: list[str] = []

    def answer(handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.RouteDef:
        return web.get(f"/{handler.__name__.removeprefix('_')}", handler)

    async def _report_docx(request: web.Request) -> web.Response:
        return web.Response(body=DOCX, content_type=DOCX_TYPE)

    async def _moved(request: web.Request) -> web.Response:
        raise web.HTTPFound("/report_docx")

    async def _loop(request: web.Request) -> web.Response:
        raise web.HTTPFound("/loop")

    async def _nowhere(request: web.Request) -> web.Response:
        return web.Response(status=302)

    async def _tgs(request: web.Request) -> web.Response:
        return web.Response(body=b"\x1f\x8b sticker", content_type="application/octet-stream")

    async def _page(request: web.Request) -> web.Response:
        return web.Response(text="<html>sign in</html>", content_type="text/html")

    async def _gone(request: web.Request) -> web.Response:
        return web.Response(status=404)

    async def _busy(request: web.Request) -> web.Response:
        return web.Response(status=503)

    async def _sticker_png(request: web.Request) -> web.Response:
        return web.Response(body=b"\x89PNG", content_type="image/png")

    async def _streamed(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()  # chunked: no Content-Length to judge it by
        response.content_type = "application/octet-stream"
        await response.prepare(request)
        for _ in range(10):
            await response.write(b"x" * 1000)
        await response.write_eof()
        return response

    @web.middleware
    async def record(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        asked.append(request.path)
        return await handler(request)

    app = web.Application(middlewares=[record])
    handlers = [_report_docx, _moved, _loop, _page, _gone, _busy, _sticker_png, _streamed]
    handlers += [_nowhere, _tgs]
    app.add_routes([answer(handler) for handler in handlers])
    app.add_routes([web.get("/files/report.docx", _report_docx)])

    async def _big_jpg(request: web.Request) -> web.Response:
        return web.Response(body=b"\xff\xd8 a big photo", content_type="image/jpeg")

    app.add_routes([web.get("/photos/big.jpg", _big_jpg)])

    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}", asked
    finally:
        await runner.cleanup()


async def test_the_fetcher_follows_redirects_and_names_the_file() -> None:
    async with file_server() as (base, asked), MediaFetcher(allow_private=True) as fetcher:
        assert await fetcher.fetch(f"{base}/report_docx", MediaType.DOCUMENT) == (
            DOCX,
            "report_docx",
        )
        assert await fetcher.fetch(f"{base}/moved?sig=secret", MediaType.DOCUMENT) == (
            DOCX,
            "report_docx",
        )
    assert asked == ["/report_docx", "/moved", "/report_docx"]


async def test_the_fetcher_refuses_what_every_recipient_would_fail_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(fetching, "upload_limit", lambda kind: 5_000)
    refusals = {
        "page": "answered an HTML page",
        "gone": "answered HTTP 404",
        "loop": "redirects more than 5 times",
        "nowhere": "answered HTTP 302 without a Location",
        "streamed": "is more than 5000 bytes",
        "report_docx?token=hidden": None,  # fits: 20 bytes
    }
    async with file_server() as (base, _), MediaFetcher(allow_private=True) as fetcher:
        for path, why in refusals.items():
            if why is None:
                await fetcher.fetch(f"{base}/{path}", MediaType.DOCUMENT)
                continue
            with pytest.raises(PermanentError, match=why) as refused:
                await fetcher.fetch(f"{base}/{path}?token=hidden", MediaType.DOCUMENT)
            assert refused.value.content_error
            assert "hidden" not in refused.value.description  # no query: it may hold a secret
        with pytest.raises(PermanentError, match="a sticker is image/webp"):
            await fetcher.fetch(f"{base}/sticker_png", MediaType.STICKER)
        # A type the server does not know (its default) is left to Telegram to judge.
        assert (await fetcher.fetch(f"{base}/tgs", MediaType.STICKER))[0].endswith(b"sticker")
        # A password in the URL is never repeated, nor the query.
        with_user = base.replace("http://", "http://alice:s3cret@")
        with pytest.raises(PermanentError) as refused:
            await fetcher.fetch(f"{with_user}/gone?sig=abc", MediaType.DOCUMENT)
        assert refused.value.description == f"media URL {base}/gone answered HTTP 404"
        with pytest.raises(TransientError, match="HTTP 503"):
            await fetcher.fetch(f"{base}/busy", MediaType.DOCUMENT)
    monkeypatch.setattr(fetching, "upload_limit", lambda kind: 10)
    async with file_server() as (base, _), MediaFetcher(allow_private=True) as fetcher:
        with pytest.raises(PermanentError, match=r"is 20 bytes; Telegram takes uploads .* 10 b"):
            await fetcher.fetch(f"{base}/report_docx", MediaType.DOCUMENT)


async def test_the_fetcher_never_reaches_inside_unless_allowed() -> None:
    async with file_server() as (base, asked), MediaFetcher() as fetcher:
        with pytest.raises(PermanentError, match=r"may not be fetched: 127\.0\.0\.1 is loopback"):
            await fetcher.fetch(f"{base}/report_docx", MediaType.DOCUMENT)
        spelled = base.replace("127.0.0.1", "0x7f.1")
        with pytest.raises(PermanentError, match=r"0x7f\.1 spells 127\.0\.0\.1"):
            await fetcher.fetch(f"{spelled}/report_docx", MediaType.DOCUMENT)
    assert asked == []


def test_a_file_telegram_does_not_fetch_is_accepted_unless_inside() -> None:
    for kind, url in (
        ("document", "https://files.example.com/report.docx"),
        ("sticker", "https://files.example.com/hello.tgs"),
        ("video_note", "https://files.example.com/round.mp4"),
    ):
        new = validate_send(
            SendRequest(media_type=kind, media_url=url, user_ids=[1]), max_user_ids=10
        )
        assert new.content.media_url == url
    inside = SendRequest(media_type="document", media_url="http://10.0.0.8/a.docx", user_ids=[1])
    with pytest.raises(InvalidArgument) as refused:
        validate_send(inside, max_user_ids=10)
    ((violation,),) = [refused.value.violations]
    assert violation.field == "media_url"
    assert "must not reach an internal network" in violation.description
    assert validate_send(inside, max_user_ids=10, allow_private_callbacks=True)
    # A URL Telegram fetches itself is its business, wherever it points.
    assert validate_send(
        SendRequest(media_type="document", media_url="http://10.0.0.8/a.pdf", user_ids=[1]),
        max_user_ids=10,
    )


async def test_a_docx_by_url_is_fetched_once_uploaded_once_then_sent_by_file_id(
    simulator: Simulator, tmp_path: Path
) -> None:
    recipients = {41, 42, 43}
    private = {"TGB_WEBHOOK_ALLOW_PRIVATE_NETWORKS": "true"}  # the file server is on 127.0.0.1
    async with (
        file_server() as (base, asked),
        open_backend("sqlite", tmp_path) as backend,
        start_stack(backend, simulator, private) as stack,
    ):
        status, body = await post(
            stack,
            "/send-message",
            {
                "media_type": "document",
                "media_url": f"{base}/files/report.docx",
                "message": "the report",
                "user_ids": sorted(recipients),
            },
        )
        assert status == 202, body
        assert_watch_complete(await watch(stack, body["broadcast_id"]), recipients)
    assert asked == ["/files/report.docx"]
    calls = simulator.calls
    assert [c.method for c in calls] == ["sendDocument"] * 3
    assert [c.media for c in calls] == ["upload", "file_id", "file_id"]
    assert all(c.ok for c in calls)
    received = simulator.messages_by_chat(BOT_ID)
    for chat in recipients:
        (message,) = received[chat]
        assert message["document"]["file_name"] == "report.docx"
        assert message["caption"] == "the report"


async def test_a_photo_telegram_could_not_fetch_is_fetched_and_uploaded_instead(
    simulator: Simulator, tmp_path: Path
) -> None:
    """Above Telegram's URL limits (5 MB photos, 20 MB other files) it answers "failed to get
    HTTP URL content": the service fetches the file itself, within the upload limits."""
    recipients = {51, 52, 53}
    private = {"TGB_WEBHOOK_ALLOW_PRIVATE_NETWORKS": "true"}
    async with (
        file_server() as (base, asked),
        open_backend("sqlite", tmp_path) as backend,
        start_stack(backend, simulator, private) as stack,
    ):
        url = f"{base}/photos/big.jpg"
        simulator.declare_url_size(url, 6 * 1024 * 1024)  # above the 5 MB photos by URL
        status, body = await post(
            stack,
            "/send-message",
            {"media_type": "photo", "media_url": url, "user_ids": [51, 52, 53]},
        )
        assert status == 202, body
        assert_watch_complete(await watch(stack, body["broadcast_id"]), recipients)
    assert asked == ["/photos/big.jpg"]
    calls = simulator.calls
    assert [(c.media, c.ok) for c in calls] == [
        (None, False),  # refused before any file was taken
        ("upload", True),
        ("file_id", True),
        ("file_id", True),
    ]
    assert "failed to get HTTP URL content" in str(calls[0].description)


async def test_an_album_item_telegram_does_not_fetch_is_fetched_for_the_album_upload(
    simulator: Simulator, tmp_path: Path
) -> None:
    private = {"TGB_WEBHOOK_ALLOW_PRIVATE_NETWORKS": "true"}
    async with (
        file_server() as (base, asked),
        open_backend("sqlite", tmp_path) as backend,
        start_stack(backend, simulator, private) as stack,
    ):
        album = [
            {"media_type": "document", "media_url": "https://files.example.com/a.pdf"},
            {"media_type": "document", "media_url": f"{base}/files/report.docx", "caption": "B"},
        ]
        status, body = await post(
            stack, "/send-message", {"media_type": "album", "album": album, "user_ids": [61, 62]}
        )
        assert status == 202, body
        assert_watch_complete(await watch(stack, body["broadcast_id"]), {61, 62})
    assert asked == ["/files/report.docx"]
    first, second = simulator.calls
    assert (first.ok, second.ok, second.media) == (True, True, "file_id")
    items = first.params["media"]
    assert items[0]["media"] == "https://files.example.com/a.pdf"  # Telegram fetches a PDF
    assert str(items[1]["media"]).startswith("attach://")  # the .docx went as an upload
    (_, docx) = simulator.messages_by_chat(BOT_ID)[62]
    assert (docx["document"]["file_name"], docx["caption"]) == ("report.docx", "B")
