"""Media by URL, as Telegram fetches it: what it refuses to fetch for each kind of file.

* ``sendDocument`` fetches only GIF, PDF and ZIP files by URL, ``sendSticker`` only .WEBP
  stickers, and a video note is never sent by URL: any other file is refused with "wrong type
  of the web page content" (judged here by the URL path's extension; a URL without one is
  fetched, as its server's type would decide).
* A file above Telegram's URL limits — 5 MB for a photo, 20 MB for anything else — is refused
  with "failed to get HTTP URL content", like a URL that does not answer. The simulator fetches
  nothing: a URL's size is what a test declared (:meth:`Simulator.declare_url_size`), else it
  fits.
"""

from __future__ import annotations

from typing import Final
from urllib.parse import urlsplit

from tgbroadcast.simulator.files import FileKind

MB: Final = 1024 * 1024
URL_LIMITS: Final = {FileKind.PHOTO: 5 * MB}
"""Bytes Telegram fetches by URL per kind (the rest: :data:`URL_LIMIT`)."""
URL_LIMIT: Final = 20 * MB
BY_URL: Final = {
    FileKind.DOCUMENT: frozenset({".gif", ".pdf", ".zip"}),
    FileKind.STICKER: frozenset({".webp"}),
    FileKind.VIDEO_NOTE: frozenset(),
}
"""The kinds Telegram fetches by URL only with these extensions (none: never)."""
WRONG_TYPE: Final = "wrong type of the web page content"
NOT_FETCHED: Final = "failed to get HTTP URL content"


def url_refusal(kind: FileKind, url: str, size: int | None) -> str | None:
    """Why Telegram would not send ``url`` as a ``kind`` file (the description after
    "Bad Request: "); ``None`` when it would. ``size``: the file's bytes, if declared."""
    allowed = BY_URL.get(kind)
    if allowed is not None:
        path = urlsplit(url).path.lower()
        name = path.rsplit("/", 1)[-1]
        extension = name[name.rfind(".") :] if "." in name else ""
        if kind is FileKind.VIDEO_NOTE or (extension and extension not in allowed):
            return WRONG_TYPE
    if size is not None and size > URL_LIMITS.get(kind, URL_LIMIT):
        return NOT_FETCHED
    return None
