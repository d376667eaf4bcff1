"""``GET /ui/`` and ``GET /ui/{path}``: the dashboard's static files.

Only the files shipped in ``static/`` are served, by their exact names (no path is ever joined
from the request, so nothing outside that folder can be reached); anything else is a 404.
The files carry no data, so no token is needed (the network allow-list still applies); every
answer carries a Content-Security-Policy that allows scripts, styles and connections from
this origin only — no inline script, no frame, no form posted elsewhere — and an ``ETag``, so
a browser revalidates instead of downloading again.
"""

from __future__ import annotations

import hashlib
import mimetypes
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from aiohttp import web

PREFIX: Final = "/ui"
INDEX: Final = "index.html"
STATIC: Final = Path(__file__).resolve().parent / "static"
ROUTE: Final = PREFIX + "/{path}"
_PATTERN: Final = PREFIX + "/{path:[^{}/]*}"
"""The route as registered: ``/ui/`` too (an empty name is the page)."""
PATHS: Final = frozenset({ROUTE})
"""The route templates served without a token (the guard matches a request's route by them)."""

CONTENT_SECURITY_POLICY: Final = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data: blob:",
        "connect-src 'self'",
        "form-action 'none'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
    )
)
HEADERS: Final = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-cache",
}
_TYPES: Final = {
    ".html": "text/html",
    ".js": "text/javascript",
    ".css": "text/css",
    ".svg": "image/svg+xml",
}


@dataclass(frozen=True, slots=True)
class StaticFile:
    body: bytes
    content_type: str
    etag: str


def load(folder: Path = STATIC) -> dict[str, StaticFile]:
    """Every file of ``folder`` (not its subfolders) by name, read once."""
    files: dict[str, StaticFile] = {}
    for path in sorted(folder.iterdir()):
        if not path.is_file() or path.name.startswith("."):
            continue
        body = path.read_bytes()
        kind = _TYPES.get(path.suffix) or mimetypes.guess_type(path.name)[0]
        files[path.name] = StaticFile(
            body=body,
            content_type=kind or "application/octet-stream",
            etag='"' + hashlib.sha256(body).hexdigest()[:32] + '"',
        )
    return files


FILES_KEY: Final = web.AppKey("ui_files", dict[str, StaticFile])


def add_routes(app: web.Application) -> None:
    """``/ui/{path}``; ``/ui/`` itself is the page."""
    app[FILES_KEY] = load()
    app.router.add_get(_PATTERN, serve)


async def serve(request: web.Request) -> web.Response:
    name = request.match_info["path"] or INDEX
    found = request.app[FILES_KEY].get(name)
    if found is None:
        raise web.HTTPNotFound(text=f"no dashboard file {PREFIX}/{name[:64]}")
    headers = {**HEADERS, "ETag": found.etag}
    if found.etag in request.headers.get("If-None-Match", ""):
        return web.Response(status=304, headers=headers)
    charset = "utf-8" if found.content_type.startswith("text/") else None
    return web.Response(
        body=found.body, content_type=found.content_type, charset=charset, headers=headers
    )
