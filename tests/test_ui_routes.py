"""The dashboard's files and its REST helper, without a browser: ``/ui/`` is served without a
token under a strict Content-Security-Policy, only the shipped files are served, and ``GET
/v1/token`` tells a token what it may do (never the token)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from multidict import CIMultiDict

from tests.fixtures.browser import ADMIN_TOKEN, READER_TOKEN, dashboard_stack
from tests.fixtures.stack import Stack
from tgbroadcast.server.ui import routes

STATIC = Path(routes.__file__).parent / "static"


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Stack]:
    async with dashboard_stack(tmp_path) as stack:
        yield stack


async def fetch(
    stack: Stack, path: str, headers: dict[str, str] | None = None
) -> tuple[int, CIMultiDict[str], bytes]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(stack.http_url + path, headers=headers or {}) as answer,
    ):
        return answer.status, CIMultiDict(answer.headers), await answer.read()


async def test_the_page_and_its_files_are_served_without_a_token(served: Stack) -> None:
    status, headers, body = await fetch(served, "/ui/")
    assert status == 200
    assert headers["Content-Type"] == "text/html; charset=utf-8"
    assert body == (STATIC / "index.html").read_bytes()
    policy = headers["Content-Security-Policy"]
    assert "script-src 'self'" in policy
    assert "default-src 'none'" in policy
    assert "unsafe-inline" not in policy
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Referrer-Policy"] == "no-referrer"
    for name, kind in (("app.js", "text/javascript"), ("app.css", "text/css")):
        status, headers, body = await fetch(served, f"/ui/{name}")
        assert (status, headers["Content-Type"]) == (200, f"{kind}; charset=utf-8")
        assert body == (STATIC / name).read_bytes()


async def test_a_file_is_revalidated_by_its_etag(served: Stack) -> None:
    _, headers, _ = await fetch(served, "/ui/app.js")
    status, again, body = await fetch(served, "/ui/app.js", {"If-None-Match": headers["ETag"]})
    assert (status, body) == (304, b"")
    assert again["ETag"] == headers["ETag"]


async def test_only_the_shipped_files_are_served(served: Stack) -> None:
    status, headers, _ = await fetch(served, "/ui/nosuch.js")
    assert status == 404
    assert headers["Content-Type"].startswith("application/problem+json")
    # No path outside the folder is ever joined: these match no public route at all.
    for path in ("/ui/..%2Froutes.py", "/ui/%2e%2e/routes.py", "/ui/static/app.js"):
        status, _, body = await fetch(served, path)
        assert status in (401, 404), path
        assert b"import" not in body, path


def test_the_page_has_no_inline_script_or_style() -> None:
    """The policy forbids them: the page would break, so none may creep in."""
    for path in STATIC.glob("*.html"):
        html = path.read_text(encoding="utf-8")
        assert not re.search(r"<script(?![^>]*\bsrc=)", html), path.name
        assert "<style" not in html, path.name
        assert " style=" not in html, path.name
        assert not re.search(r"\son[a-z]+=", html), path.name
    for path in STATIC.glob("*.js"):
        script = path.read_text(encoding="utf-8")
        assert "innerHTML" not in script, path.name
        assert "eval(" not in script, path.name


def test_every_module_the_page_imports_is_shipped() -> None:
    shipped = {path.name for path in STATIC.iterdir()}
    for path in STATIC.glob("*.js"):
        for imported in re.findall(r'from "\./([^"]+)"', path.read_text(encoding="utf-8")):
            assert imported in shipped, (path.name, imported)


async def test_the_token_route_names_the_callers_grants(served: Stack) -> None:
    for token, name, scopes in (
        (ADMIN_TOKEN, "operator", None),
        (READER_TOKEN, "reader", ["broadcasts:read"]),
    ):
        headers = {"Authorization": f"Bearer {token}"}
        async with (
            aiohttp.ClientSession() as session,
            session.get(served.http_url + "/v1/token", headers=headers) as answer,
        ):
            assert answer.status == 200
            body = await answer.json()
        assert body["name"] == name
        assert body["scopes"] == (scopes or sorted(body["scopes"]))
        assert len(body["scopes"]) == (6 if scopes is None else 1)
        assert body["bots"] == ["*"]
        assert body["bot_limits"] == [
            {"name": "default", "rate_limit": 25.0, "paid_rate_limit": 1000.0}
        ]
        assert token not in await answer.text()
    status, _, _ = await fetch(served, "/v1/token")
    assert status == 401
    status, _, _ = await fetch(served, "/v1/token?x=1", {"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert status == 400


def _colours(block: str) -> dict[str, str]:
    return dict(re.findall(r"--([a-z-]+):\s*(#[0-9a-f]{6});", block))


def _contrast(first: str, second: str) -> float:
    def luminance(colour: str) -> float:
        channels = [int(colour[i : i + 2], 16) / 255 for i in (1, 3, 5)]
        linear = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
        return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]

    high, low = sorted((luminance(first), luminance(second)), reverse=True)
    return (high + 0.05) / (low + 0.05)


def test_text_colours_meet_wcag_aa_in_both_themes() -> None:
    """Every text colour on every background of the light and the dark theme: 4.5:1 at least."""
    css = (STATIC / "app.css").read_text(encoding="utf-8")
    light = _colours(css.split("@media (prefers-color-scheme: dark)")[0])
    dark = {**light, **_colours(css.split("@media (prefers-color-scheme: dark)")[1].split("}")[0])}
    for theme in (light, dark):
        for text in ("text", "muted", "accent", "ok", "bad", "warn"):
            for background in ("bg", "surface"):
                assert _contrast(theme[text], theme[background]) >= 4.5, (text, background)
        assert _contrast(theme["accent-text"], theme["accent"]) >= 4.5
        assert _contrast(theme["bg"], theme["bad"]) >= 4.5  # an error toast
        assert _contrast("#ffffff", theme["tg-button"]) >= 4.5  # the preview's buttons
