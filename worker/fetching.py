"""Files the service fetches from a URL itself because Telegram will not: a document other
than GIF, PDF or ZIP, a sticker other than .WEBP, a video note
(:func:`tgbroadcast.core.rules.rich_content.fetched_by_service`).

Guarantees:

* **Once per broadcast.** The Deliverer fetches on a broadcast's first send only (its
  first-send lock); that send uploads the bytes and every later recipient gets Telegram's
  file_id, kept by :class:`FileIds` (in SQL for every worker, per media version: an edit
  that replaces the media starts again).
* **Size-capped** at Telegram's upload limit for the kind (50 MB; 10 MB photos:
  :func:`~tgbroadcast.core.rules.rich_content.upload_limit`): a ``Content-Length`` above it
  is refused before the body is read, and a body is never read past it.
* **Content type checked**: an HTML page (a login or error page where a file was meant) is
  refused for every kind; a sticker must be ``image/webp``, ``application/x-tgsticker`` or
  ``video/webm``, a video note ``video/*``.
* **Never inside.** Unless ``webhook.allow_private_networks``, no connection goes to an internal
  address: every address a host resolves to is checked, so is a host spelled as an address,
  and so is every redirect's target (at most :data:`MAX_REDIRECTS`, each checked the same way).
* **Errors say what to fix.** What the URL answers for good (4xx, a refused address, too big,
  the wrong type) is a :class:`PermanentError` with ``content_error`` — every recipient would
  fail alike, so the broadcast's circuit breaker stops it; a timeout, a network error, 408,
  429 or a 5xx is a :class:`TransientError`, and the send is tried again.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from dataclasses import replace
from types import TracebackType
from typing import Final
from urllib.parse import unquote, urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver
from yarl import URL

from tgbroadcast.core.domain.errors import PermanentError, TransientError
from tgbroadcast.core.domain.model import Content, MediaType
from tgbroadcast.core.outbound import CheckedResolver, RefusedDestination, allow_all
from tgbroadcast.core.rules import addresses
from tgbroadcast.core.rules.rich_content import fetched_by_service, upload_limit
from tgbroadcast.core.store import Store

MAX_REDIRECTS: Final = 5
FETCH_TIMEOUT: Final = 120.0
"""Seconds a whole fetch may take, redirects included (50 MB at about 3 Mbit/s)."""
USER_AGENT: Final = "tgbroadcast-media-fetch"
_GENERIC_TYPES: Final = frozenset(
    {"application/octet-stream", "binary/octet-stream", "application/gzip", ""}
)
"""What servers answer for a type they do not know (nginx's and S3's defaults): Telegram judges
the file then."""
_STICKER_TYPES: Final = frozenset({"image/webp", "application/x-tgsticker", "video/webm"})
_CHUNK: Final = 64 * 1024

logger = logging.getLogger(__name__)


class MediaFetcher:
    """Fetches a file by URL for one upload (async context manager: owns an HTTP session)."""

    def __init__(
        self,
        *,
        allow_private: bool = False,
        timeout: float = FETCH_TIMEOUT,
        resolver: AbstractResolver | None = None,
    ) -> None:
        self._resolver = CheckedResolver(
            refusal=allow_all if allow_private else addresses.refusal, resolver=resolver
        )
        self._timeout = timeout
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> MediaFetcher:
        self._session = aiohttp.ClientSession(
            # Resolved per connection, so each is checked (no cache of unchecked answers).
            connector=aiohttp.TCPConnector(resolver=self._resolver, use_dns_cache=False),
            timeout=aiohttp.ClientTimeout(total=self._timeout),
            headers={"User-Agent": USER_AGENT},
            trust_env=False,  # no proxy from the environment: it would do the resolving
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._session is not None:
            await self._session.close()
        await self._resolver.close()

    async def fetch(self, url: str, kind: MediaType) -> tuple[bytes, str]:
        """The file at ``url`` for a ``kind`` message, and its name (the URL path's last
        segment, else ``file``)."""
        assert self._session is not None, "use MediaFetcher as an async context manager"
        limit = upload_limit(kind)
        target = _url(url)
        try:
            async with asyncio.timeout(self._timeout):  # the whole fetch, redirects included
                return await self._follow(url, target, kind, limit)
        except RefusedDestination as refused:
            raise _refused(url, f"may not be fetched: {refused}") from None
        except TimeoutError:
            raise TransientError(f"fetching {_shown(url)} timed out") from None
        except (aiohttp.NonHttpUrlClientError, aiohttp.InvalidUrlClientError):
            raise _refused(url, "redirects to a URL that is not http(s)") from None
        except aiohttp.ClientError as error:
            if isinstance(cause := error.__cause__, RefusedDestination):
                raise _refused(url, f"may not be fetched: {cause}") from None
            raise TransientError(f"fetching {_shown(url)} failed: {type(error).__name__}") from None

    async def _follow(
        self, url: str, target: URL, kind: MediaType, limit: int
    ) -> tuple[bytes, str]:
        """``target`` fetched, following at most :data:`MAX_REDIRECTS` redirects, each checked."""
        assert self._session is not None
        for _ in range(MAX_REDIRECTS + 1):
            self._resolver.check_literal(target.raw_host or "")
            async with self._session.get(target, allow_redirects=False) as response:
                if response.status in (301, 302, 303, 307, 308):
                    location = response.headers.get("Location", "")
                    if not location:
                        raise _refused(url, f"answered HTTP {response.status} without a Location")
                    target = target.join(_url(location))
                    continue
                _check_status(url, response.status)
                _check_type(url, kind, response.content_type)
                if response.content_length is not None and response.content_length > limit:
                    raise _refused(url, f"is {response.content_length} bytes; {_limit(limit)}")
                return await _body(url, response, limit), _filename(target)
        raise _refused(url, f"redirects more than {MAX_REDIRECTS} times")


async def fetch_album_items(
    fetcher: MediaFetcher, content: Content
) -> tuple[Content, dict[str, bytes]]:
    """``content`` (an album) with each item Telegram would not fetch by URL fetched: the item
    then names its bytes (``media_upload``, a name of the returned mapping) instead of the
    URL, for the album's one upload."""
    fetched: dict[str, bytes] = {}
    items = []
    for index, item in enumerate(content.options.album):
        url = item.media_url or ""
        if item.media_upload is None and fetched_by_service(item.kind.value, url):
            data, name = await fetcher.fetch(url, MediaType(item.kind.value))
            key = f"fetched-{index}"
            fetched[key] = data
            item = replace(
                item, media_url=None, media_upload=key, media_filename=item.media_filename or name
            )
        items.append(item)
    if not fetched:
        return content, {}
    return replace(content, options=replace(content.options, album=tuple(items))), fetched


FETCH_FAILED: Final = ("failed to get HTTP URL content", "wrong type of the web page content")
"""Telegram's refusals of a file it could not fetch by URL (its size, or its server)."""


def telegram_could_not_fetch(error: PermanentError, content: Content) -> bool:
    """Whether ``error`` is Telegram refusing to fetch ``content``'s URL itself (above its
    URL limits — 5 MB photos, 20 MB other files — or not served to it): the service may."""
    url = content.media_url or ""
    return (
        content.media_type is not MediaType.ALBUM
        and url.lower().startswith(("http://", "https://"))
        and any(text in error.description for text in FETCH_FAILED)
    )


async def fetch_instead(
    fetcher: MediaFetcher, error: PermanentError, content: Content
) -> tuple[bytes, Content]:
    """The file Telegram could not fetch, fetched here for an upload (within the upload
    limits), and ``content`` naming it; if that fails too, Telegram's refusal stands (a
    content error) with the fetch's reason."""
    try:
        data, name = await fetcher.fetch(content.media_url or "", content.media_type)
    except PermanentError as fetching:
        raise PermanentError(
            f"{error.description} (and the service's own fetch: {fetching.description})",
            error_code=error.error_code,
            content_error=True,
        ) from None
    return data, replace(content, media_filename=content.media_filename or name)


async def _body(url: str, response: aiohttp.ClientResponse, limit: int) -> bytes:
    data = bytearray()
    async for chunk in response.content.iter_chunked(_CHUNK):
        data += chunk
        if len(data) > limit:
            raise _refused(url, f"is more than {limit} bytes; {_limit(limit)}")
    if not data:
        raise _refused(url, "answered an empty file")
    return bytes(data)


def _check_status(url: str, status: int) -> None:
    if 200 <= status < 300:
        return
    if status in (408, 429) or status >= 500:
        raise TransientError(f"fetching {_shown(url)} answered HTTP {status}")
    raise _refused(url, f"answered HTTP {status}")


def _check_type(url: str, kind: MediaType, content_type: str) -> None:
    if content_type == "text/html":
        raise _refused(url, "answered an HTML page, not a file")
    if content_type in _GENERIC_TYPES:
        return
    if kind is MediaType.STICKER and content_type not in _STICKER_TYPES:
        raise _refused(url, f"answered {content_type}; a sticker is image/webp, .tgs or video/webm")
    if kind is MediaType.VIDEO_NOTE and not content_type.startswith("video/"):
        raise _refused(url, f"answered {content_type}; a video note is a video")


def _url(value: str) -> URL:
    try:
        return URL(value)
    except ValueError:
        raise PermanentError(
            f"media URL {_shown(value)} is not a URL", error_code=400, content_error=True
        ) from None


def _filename(url: URL) -> str:
    name = unquote(urlsplit(str(url)).path.rsplit("/", 1)[-1]).strip()
    return name[:255] or "file"


def _limit(limit: int) -> str:
    mb = 1024 * 1024
    size = f"{limit // mb} MB" if limit % mb == 0 else f"{limit} bytes"
    return f"Telegram takes uploads of this kind up to {size}"


def _shown(url: str) -> str:
    """The URL without its user info, query and fragment (they may carry a password, a
    signature or a token)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        port = ""
    return f"{parts.scheme}://{host}{port}{parts.path}"[:200]


def _refused(url: str, why: str) -> PermanentError:
    return PermanentError(f"media URL {_shown(url)} {why}", error_code=400, content_error=True)


FILE_ID_CACHE = 1024
"""Media whose file_id a worker keeps in memory (the rest are read from SQL)."""

MediaKey = tuple[int, int, int]
"""A broadcast's media: (broadcast id, media version — an edit may replace the media —,
variant position — 0 without variants)."""


def needs_first_send(content: Content) -> bool:
    """Whether Telegram must fetch or receive the file before a file_id exists for it (the
    broadcast's first send of it holds :meth:`FileIds.first_send`)."""
    if content.media_type is MediaType.ALBUM:  # any item fetched or uploaded
        return any(
            item.media_upload is not None
            or (item.media_url or "").lower().startswith(("http://", "https://"))
            for item in content.options.album
        )
    url = content.media_url or ""
    by_url = url.lower().startswith(("http://", "https://"))
    return content.media_type.has_media and (by_url or content.media_upload is not None)


class FileIds:
    """The file_ids Telegram gave broadcasts' media: fetched or uploaded once per broadcast
    and media version (and variant), then sent by file_id by every worker (kept in SQL, a few
    in memory)."""

    def __init__(self, store: Store, *, bot: str) -> None:
        self._store = store
        self._bot = bot
        self._known: OrderedDict[MediaKey, str] = OrderedDict()
        self._first_sends: dict[MediaKey, asyncio.Lock] = {}

    def first_send(self, key: MediaKey) -> asyncio.Lock:
        """Held by the send that fetches or uploads the media (the others wait for it)."""
        return self._first_sends.setdefault(key, asyncio.Lock())

    async def get(self, key: MediaKey) -> str | None:
        """The media's file_id, if a send stored it."""
        file_id = self._known.get(key)
        broadcast_id, media_version, variant = key
        if file_id is None:
            try:
                file_id = await self._store.media_file_id(broadcast_id, media_version, variant)
            except Exception as exc:  # the first send will fetch it again: costly, not wrong
                logger.warning(
                    "reading a media file_id failed",
                    extra={"bot": self._bot, "broadcast_id": broadcast_id, "error": repr(exc)},
                )
                return None
            if file_id is not None:
                self._remember(key, file_id)
        return file_id

    async def store(self, key: MediaKey, file_id: str) -> None:
        """Remember the file_id and share it with other workers (a failure to share only
        costs them one more fetch)."""
        self._remember(key, file_id)
        try:
            await self._store.store_media_file_id(key[0], file_id, key[1], key[2])
        except Exception as exc:
            logger.warning(
                "storing a media file_id failed",
                extra={"bot": self._bot, "broadcast_id": key[0], "error": repr(exc)},
            )

    def forget(self, broadcast_id: int) -> None:
        """A finished broadcast's media are not sent again."""
        for key in [key for key in self._known if key[0] == broadcast_id]:
            del self._known[key]
        for key in [key for key in self._first_sends if key[0] == broadcast_id]:
            del self._first_sends[key]

    def _remember(self, key: MediaKey, file_id: str) -> None:
        self._known[key] = file_id
        while len(self._known) > FILE_ID_CACHE:
            old, _ = self._known.popitem(last=False)
            self._first_sends.pop(old, None)
