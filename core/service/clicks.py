"""Opening a tracked link (``GET /c/{code}``): the code checked, the recipient's link found
again, its first click recorded and streamed (see :mod:`tgbroadcast.core.rules.clicks`)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

from tgbroadcast.core.domain.errors import Expired, NotFound
from tgbroadcast.core.domain.model import Broadcast, ClickCounts, Content, Variant
from tgbroadcast.core.metrics import Metrics
from tgbroadcast.core.queue import ClickEvent, Queue
from tgbroadcast.core.rules import clicks
from tgbroadcast.core.rules.templates import personalized
from tgbroadcast.core.store import Store

logger = logging.getLogger(__name__)

_SCHEMES = frozenset({"http", "https", "tg"})
UNKNOWN = "no such link"
"""Every code that does not open a link gets this answer: it says nothing of why."""


@dataclass(frozen=True, slots=True, kw_only=True)
class LinkClicks:
    """One tracked link of a broadcast's message (of one variant) and its unique clicks."""

    variant: str | None
    link: int
    """Its position among the message's links."""
    url: str
    """Where it leads (a personalized URL as it is for a user without values)."""
    clicks: int


def link_clicks(broadcast: Broadcast, counts: ClickCounts) -> tuple[LinkClicks, ...]:
    """Every link of the broadcast's message(s), variant by variant, with its clicks."""
    contents: list[tuple[str | None, Content]] = [(v.name, v.content) for v in broadcast.variants]
    contents = contents or [(None, broadcast.content)]
    found: list[LinkClicks] = []
    for name, content in contents:
        shown = personalized(content, 0, None) if content.options.personalize else content
        for link, url in enumerate(clicks.links(shown)):
            found.append(
                LinkClicks(
                    variant=name, link=link, url=url, clicks=counts.by_link.get((name, link), 0)
                )
            )
    return tuple(found)


class ClickService:
    """Answers tracked links with where they lead, recording each recipient's first click on
    each link; ``retention_days`` after a broadcast started its links are :class:`Expired`."""

    def __init__(
        self, *, store: Store, queue: Queue, metrics: Metrics, retention_days: float
    ) -> None:
        self._store = store
        self._queue = queue
        self._metrics = metrics
        self._retention = timedelta(days=retention_days)

    async def open(self, code: str, *, count: bool = True) -> str:
        """The URL the link ``code`` stands for; :class:`NotFound` for a code the service did
        not make (or a link no longer in the message, or not an http(s)/tg link),
        :class:`Expired` past retention (counted from the broadcast's start). ``count``:
        record the click (not for a ``HEAD`` or Telegram's own link fetcher)."""
        claimed = clicks.decode_unverified(code)
        if claimed is None:
            raise NotFound(UNKNOWN)
        claim, payload, tag = claimed
        try:
            broadcast = await self._store.get_broadcast(claim.broadcast_id)
        except NotFound:
            raise NotFound(UNKNOWN) from None
        key = broadcast.click_key
        if key is None or not clicks.verify(payload, tag, bytes.fromhex(key)):
            raise NotFound(UNKNOWN)
        now = datetime.now(UTC)
        # From when it started sending: a broadcast scheduled far ahead keeps its links.
        if now > (broadcast.started_at or broadcast.created_at) + self._retention:
            raise Expired("this link has expired")
        content = await self._content(broadcast, claim.user_id, claim.variant)
        variant = broadcast.variants[claim.variant] if broadcast.variants else None
        urls = clicks.links(content)
        if claim.link >= len(urls):
            raise NotFound("this link is no longer in the message")  # edited away
        url = urls[claim.link]
        if urlsplit(url).scheme.lower() not in _SCHEMES:
            raise NotFound(UNKNOWN)  # e.g. javascript: written in the markup
        if count:
            await self._count(broadcast, claim, url, variant=variant, now=now)
        return url

    async def _count(
        self,
        broadcast: Broadcast,
        claim: clicks.ClickCode,
        url: str,
        *,
        variant: Variant | None,
        now: datetime,
    ) -> None:
        """Record and stream the click if it is the recipient's first on the link; best
        effort: a database or NATS outage must not break the link itself."""
        try:
            first = await self._store.record_click(
                broadcast.id,
                claim.user_id,
                claim.link,
                variant=None if variant is None else variant.name,
                now=now,
            )
        except Exception as exc:
            logger.warning(
                "recording a click failed",
                extra={"broadcast_id": broadcast.id, "user_id": claim.user_id, "error": repr(exc)},
            )
            return
        self._metrics.clicks.labels(kind="first" if first else "repeat", bot=broadcast.bot).inc()
        if first:
            await self._publish(broadcast, claim.user_id, claim.link, url)

    async def _content(self, broadcast: Broadcast, user_id: int, variant: int) -> Content:
        """The recipient's content as its message was last sent or edited: its variant,
        personalized for it."""
        if broadcast.variants:
            if variant >= len(broadcast.variants):
                raise NotFound(UNKNOWN)
            content = broadcast.variants[variant].content
        else:
            content = broadcast.content
        if not content.options.personalize:
            return content
        profiles = await self._store.profiles([user_id], bot=broadcast.bot)
        return personalized(content, user_id, profiles.get(user_id))

    async def _publish(self, broadcast: Broadcast, user_id: int, link: int, url: str) -> None:
        """The click on the broadcast's events, for its watchers (best effort: the click is
        recorded either way)."""
        try:
            found = await self._store.results_among(broadcast.id, [user_id])
            if not found:
                return
            event = ClickEvent(result=replace(found[0], click=url), link=link)
            await self._queue.publish_events([event])
        except Exception as exc:
            logger.warning(
                "publishing a click failed",
                extra={"broadcast_id": broadcast.id, "user_id": user_id, "error": repr(exc)},
            )
