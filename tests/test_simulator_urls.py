"""The simulator refuses media by URL as Telegram does: documents other than GIF, PDF and ZIP,
stickers other than .WEBP and video notes are not fetched ("wrong type of the web page
content"); files above the URL limits (5 MB photos, 20 MB other files) are not either ("failed
to get HTTP URL content"); what fits is sent."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from tests.fixtures.telegram import call, failure
from tests.fixtures.telegram import http as http_fixture  # noqa: F401 -- fixture "http"
from tgbroadcast.simulator import Simulator

MB = 1024 * 1024
WRONG_TYPE = "Bad Request: wrong type of the web page content"
NOT_FETCHED = "Bad Request: failed to get HTTP URL content"


async def send(
    http: aiohttp.ClientSession, sim: Simulator, method: str, field: str, url: str
) -> tuple[int, dict[str, Any]]:
    return await call(http, sim, method, json={"chat_id": 7, field: url})


@pytest.mark.parametrize(
    ("method", "field", "url", "refusal"),
    [
        ("sendDocument", "document", "https://files.test/report.docx", WRONG_TYPE),
        ("sendDocument", "document", "https://files.test/REPORT.PDF", None),
        ("sendDocument", "document", "https://files.test/a.gif?v=2", None),
        ("sendDocument", "document", "https://files.test/bundle.zip", None),
        ("sendDocument", "document", "https://files.test/download", None),  # its server says
        ("sendSticker", "sticker", "https://files.test/cat.tgs", WRONG_TYPE),
        ("sendSticker", "sticker", "https://files.test/cat.webm", WRONG_TYPE),
        ("sendSticker", "sticker", "https://files.test/cat.webp", None),
        ("sendVideoNote", "video_note", "https://files.test/round.mp4", WRONG_TYPE),
        ("sendPhoto", "photo", "https://files.test/photo.docx", None),  # not judged by name
    ],
)
async def test_kinds_telegram_does_not_fetch_by_url_are_refused(
    http: aiohttp.ClientSession,
    simulator: Simulator,
    method: str,
    field: str,
    url: str,
    refusal: str | None,
) -> None:
    status, body = await send(http, simulator, method, field, url)
    if refusal is None:
        assert status == 200, body
        assert field in body["result"]
    else:
        assert failure(status, body) == (400, refusal)
    assert simulator.messages_by_chat().get(7, []) == ([] if refusal else [body["result"]])


async def test_files_above_the_url_limits_are_not_fetched(
    http: aiohttp.ClientSession, simulator: Simulator
) -> None:
    photo, big_photo = "https://files.test/p.jpg", "https://files.test/big.jpg"
    video, big_video = "https://files.test/v.mp4", "https://files.test/big.mp4"
    simulator.declare_url_size(photo, 5 * MB)
    simulator.declare_url_size(big_photo, 5 * MB + 1)
    simulator.declare_url_size(video, 20 * MB)
    simulator.declare_url_size(big_video, 20 * MB + 1)
    assert (await send(http, simulator, "sendPhoto", "photo", photo))[0] == 200
    assert failure(*await send(http, simulator, "sendPhoto", "photo", big_photo)) == (
        400,
        NOT_FETCHED,
    )
    assert (await send(http, simulator, "sendVideo", "video", video))[0] == 200
    assert failure(*await send(http, simulator, "sendVideo", "video", big_video)) == (
        400,
        NOT_FETCHED,
    )
    # Over the control API too, and a reset forgets it.
    async with http.post(
        f"{simulator.api_url}/_sim/url_sizes", json={"url": photo, "size": 6 * MB}
    ) as answer:
        assert answer.status == 200
    assert failure(*await send(http, simulator, "sendPhoto", "photo", photo))[1] == NOT_FETCHED
    async with http.post(
        f"{simulator.api_url}/_sim/url_sizes", json={"url": photo, "size": -1}
    ) as answer:
        assert answer.status == 400
    simulator.reset()
    assert (await send(http, simulator, "sendPhoto", "photo", photo))[0] == 200
