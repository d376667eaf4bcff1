"""The broadcast domain: plain frozen values shared by the API, the store and the workers.

Protobuf and JSON live at the edges (``server``); Telegram's types live in ``worker``.
Everything in between speaks these dataclasses.

Delivery states, and what they guarantee:

* ``PENDING`` — the recipient has not reached a final outcome. A worker may be sending to it
  right now; after a crash it is sent again (at most the sends in flight are repeated).
* ``SENT`` — Telegram accepted the message; ``message_id`` is Telegram's id for it. Final.
* Not delivered, final, ``error`` holding Telegram's description:

  - ``BLOCKED`` — the user blocked the bot (the user is marked inactive);
  - ``DEACTIVATED`` — the account was deleted (the user is marked inactive);
  - ``CANT_INITIATE`` — the user never started the bot;
  - ``KICKED`` — the bot was removed from the group or channel, or it was deleted;
  - ``CHAT_NOT_FOUND`` — no such chat;
  - ``BAD_REQUEST`` — any other refusal (the content itself, for example);
  - ``FAILED`` — every attempt failed with a transient error (5xx, network, timeout).

A final state is written once, by a conditional update from ``PENDING``: a recipient is
counted once however many workers race on it.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from tgbroadcast.core.domain.access import DEFAULT_BOT
from tgbroadcast.core.domain.content import DEFAULT_OPTIONS, ContentOptions

TEXT_LIMIT = 4096
"""Telegram's limit for message text, in characters after entities parsing."""

CAPTION_LIMIT = 1024
"""Telegram's limit for media captions."""


class MediaType(enum.StrEnum):
    """How a broadcast is sent: one Bot API method each."""

    TEXT = "text"
    PHOTO = "photo"
    VIDEO = "video"
    ANIMATION = "animation"
    DOCUMENT = "document"
    AUDIO = "audio"
    VOICE = "voice"
    VIDEO_NOTE = "video_note"
    STICKER = "sticker"
    ALBUM = "album"
    """sendMediaGroup of ``options.album``; captions are per item."""
    COPY = "copy"
    """copyMessage of ``options.source``; ``message``, if any, is the new caption."""
    FORWARD = "forward"
    """forwardMessage of ``options.source``."""

    @property
    def has_media(self) -> bool:
        """Whether the message is one media file, given by ``media_url`` or an upload."""
        return self not in (MediaType.TEXT, MediaType.ALBUM, MediaType.COPY, MediaType.FORWARD)

    @property
    def takes_caption(self) -> bool:
        """Whether ``message`` is sent as a caption (text, captionless media, albums and
        forwards: no)."""
        return self not in (
            MediaType.TEXT,
            MediaType.VIDEO_NOTE,
            MediaType.STICKER,
            MediaType.ALBUM,
            MediaType.FORWARD,
        )


class BroadcastStatus(enum.StrEnum):
    """Where a broadcast is in its life. ``COMPLETED``, ``CANCELLED``, ``FAILED`` and
    ``RECALLED`` are final; a recall moves any of the first three on to ``RECALLING``."""

    SCHEDULED = "scheduled"
    QUEUED = "queued"
    RUNNING = "running"
    PAUSED = "paused"
    COMPLETED = "completed"
    CANCELLED = "cancelled"
    FAILED = "failed"
    RECALLING = "recalling"
    """RecallBroadcast: nothing more is sent; its messages are being deleted."""
    RECALLED = "recalled"
    """Every message of it that could be deleted was (each recipient's ``recall`` says)."""

    @property
    def is_final(self) -> bool:
        return self in (
            BroadcastStatus.COMPLETED,
            BroadcastStatus.CANCELLED,
            BroadcastStatus.FAILED,
            BroadcastStatus.RECALLED,
        )


class RecallOutcome(enum.StrEnum):
    """What a recall did to one recipient's messages."""

    DELETED = "deleted"
    TOO_OLD = "too_old"
    """Sent 48 hours ago or more: Telegram no longer lets a bot delete it."""
    NOT_FOUND = "not_found"
    """Gone already (the user deleted the chat or the message)."""
    FAILED = "failed"
    """Refused otherwise, or every attempt failed; ``recall_error`` says why."""


class EditOutcome(enum.StrEnum):
    """What an edit (EditBroadcast) did to one recipient's messages."""

    EDITED = "edited"
    """They carry the new content (Telegram's "message is not modified" included)."""
    NOT_FOUND = "not_found"
    """Gone (the user deleted the chat or the message)."""
    FAILED = "failed"
    """Refused otherwise ("message can't be edited", ...), or every attempt failed;
    ``edit_error`` says why."""


class DeliveryState(enum.StrEnum):
    """One recipient's state; see the module docstring. Every state but PENDING is final."""

    PENDING = "pending"
    SENT = "sent"
    BLOCKED = "blocked"
    DEACTIVATED = "deactivated"
    CANT_INITIATE = "cant_initiate"
    KICKED = "kicked"
    CHAT_NOT_FOUND = "chat_not_found"
    BAD_REQUEST = "bad_request"
    FAILED = "failed"

    @property
    def is_final(self) -> bool:
        return self is not DeliveryState.PENDING

    @property
    def delivered(self) -> bool:
        return self is DeliveryState.SENT

    @property
    def deactivates_user(self) -> bool:
        """Whether this outcome leaves the user out of later ``all_users`` broadcasts."""
        return self in (DeliveryState.BLOCKED, DeliveryState.DEACTIVATED)


@dataclass(frozen=True, slots=True, kw_only=True)
class Content:
    """What is sent to every recipient.

    ``message`` is the text for ``TEXT`` and the caption otherwise (empty: no caption). The
    media is either ``media_url`` — an HTTP(S) URL Telegram fetches, or a file_id — or
    ``media_upload``, the name under which bytes uploaded through the API wait in the queue's
    media store, sent as ``media_filename``.
    """

    message: str
    media_type: MediaType = MediaType.TEXT
    media_url: str | None = None
    media_upload: str | None = None
    media_filename: str | None = None
    allow_paid_broadcast: bool = False
    """Telegram's paid broadcasts: up to 1000 messages per second, 0.1 Star each over 30."""
    options: ContentOptions = DEFAULT_OPTIONS
    """Formatting, keyboard, flags, album items, copied message
    (:mod:`tgbroadcast.core.domain.content`)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Variant:
    """One of a broadcast's contents, chosen per recipient (:mod:`tgbroadcast.core.rules.variants`):
    by language when one of ``language_codes`` is the user's, else by ``weight`` among the
    variants without languages (the default ones)."""

    name: str
    content: Content
    weight: int = 1
    language_codes: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class ContentEdit:
    """A validated EditBroadcast: the broadcast's new text or caption and options (its
    formatting and keyboard replaced, the rest kept), and its new media (``None``: kept)."""

    message: str
    options: ContentOptions
    media_url: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class NewBroadcast:
    """A validated request for a broadcast.

    Exactly one audience: ``user_ids`` (distinct, in request order: validation makes them
    :class:`~tgbroadcast.core.domain.recipients.DistinctIds`), ``all_users`` or ``filter``.
    """

    content: Content
    user_ids: Sequence[int] = ()
    all_users: bool = False
    filter: UserFilter | None = None
    """Instead of ``user_ids``/``all_users``: the active users matching this filter."""
    callback_url: str | None = None
    """Where a signed summary is POSTed when the broadcast ends (see
    ``tgbroadcast.core.background.webhooks``)."""
    send_at: datetime | None = None
    """Start at this time (``SCHEDULED`` until then); ``None`` or a past time: now."""
    idempotency_key: str | None = None
    """The caller's key: a repeat with the same key and request (and bot) returns this
    broadcast. Keys are per bot: two bots may use the same key."""
    bot: str = DEFAULT_BOT
    """The bot that sends it: an audience (``user_ids``, ``all_users``, ``filter``) is that
    bot's users."""
    max_stars: int | None = None
    """A paid broadcast's Stars budget: its paid sending stops once the estimated spend
    reaches it, and the rest is sent at the free rate."""
    variants: tuple[Variant, ...] = ()
    """Several contents, one per recipient; ``content`` is then the first variant's."""
    track_clicks: bool = False
    """Lead every recipient's links through the service (``tgbroadcast.core.rules.clicks``)."""


class ControlAction(enum.StrEnum):
    """A lifecycle move asked for through the API, recorded with who asked for it."""

    PAUSE = "pause"
    RESUME = "resume"
    CANCEL = "cancel"
    RECALL = "recall"
    EDIT = "edit"


SYSTEM_ACTOR = "system"
"""The actor recorded for a move made without a caller (the API always passes the token's
name; only code inside the service, e.g. an operator's script on the store, omits it)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class BroadcastAction:
    """Who paused, resumed or cancelled a broadcast, and when (the move's commit time)."""

    action: ControlAction
    actor: str
    """The API token's name (never the token)."""
    at: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class Broadcast:
    """A stored broadcast. ``sent + failed + pending == total`` at every moment; ``failed``
    counts every recipient not delivered, whatever the reason. ``error`` says why a FAILED
    broadcast was stopped."""

    id: int
    status: BroadcastStatus
    content: Content
    total: int
    sent: int
    failed: int
    created_at: datetime
    finished_at: datetime | None = None
    error: str | None = None
    callback_url: str | None = None
    send_at: datetime | None = None
    """When a ``SCHEDULED`` broadcast starts (kept after it started)."""
    started_at: datetime | None = None
    """When the first recipient's outcome was recorded."""
    idempotency_key: str | None = None
    resumed_at: datetime | None = None
    """The last ResumeBroadcast: it names the current generation of jobs (see
    :mod:`tgbroadcast.core.domain.states`)."""
    created_by: str = ""
    """The name of the API token that sent it; empty for broadcasts stored before names
    were recorded."""
    bot: str = DEFAULT_BOT
    """The bot that sends it (``default`` for broadcasts stored before bots existed). Ids
    are unique across bots."""
    actions: tuple[BroadcastAction, ...] = ()
    """Its pauses, resumes and cancels, oldest first. Read only where the API shows it
    (``Store.get_broadcast(..., actions=True)``, listing, the moves); empty elsewhere."""
    recall_at: datetime | None = None
    """When RecallBroadcast was asked for; ``None`` unless recalling or recalled."""
    recalled: int = 0
    """Recipients whose recall has its outcome (each counted once)."""
    content_version: int = 1
    """1 as sent; each EditBroadcast adds one (``content`` is always the latest)."""
    media_version: int = 1
    """The content version whose edit last replaced the media (1: never replaced)."""
    edit_at: datetime | None = None
    """When the last EditBroadcast was asked for; ``None`` if it never was."""
    editing: bool = False
    """The last edit still has recipients to edit (their messages carry older content)."""
    edited: int = 0
    """Recipients whose edit to ``content_version`` has its outcome (each counted once)."""
    max_stars: int | None = None
    """A paid broadcast's Stars budget (``None``: none)."""
    stars_spent_milli: int = 0
    """The estimated Stars its paid sends cost, in thousandths."""
    paid_stopped_at: datetime | None = None
    """When its paid sending stopped, the budget spent (the rest goes at the free rate)."""
    throttled_until: datetime | None = None
    """Until when its bot's sending was parked by a long flood wait (a 429 whose
    ``retry_after`` exceeded ``worker.park_after``); :meth:`throttled_at` reads it."""
    variants: tuple[Variant, ...] = ()
    """Its contents when it has several, one per recipient (``content`` is the first's)."""
    click_key: str | None = field(default=None, repr=False)
    """With click tracking: the key signing its links' codes (hex); ``None``: not tracked."""
    click_base: str | None = None
    """With click tracking: the service's public address its links lead through."""

    @property
    def stars_spent_estimate(self) -> float:
        """Stars its paid sends are estimated to have cost."""
        return self.stars_spent_milli / 1000

    def throttled_at(self, now: datetime) -> datetime | None:
        """When its parked sending resumes, if it still is parked at ``now``."""
        until = self.throttled_until
        return until if until is not None and until > now else None

    @property
    def pending(self) -> int:
        return self.total - self.sent - self.failed


@dataclass(frozen=True, slots=True, kw_only=True)
class DeliveryResult:
    """One recipient's final outcome (``state`` is never ``PENDING``)."""

    broadcast_id: int
    user_id: int
    state: DeliveryState
    finished_at: datetime
    message_id: int | None = None
    """The (first) message Telegram made of it; ``None`` unless ``SENT``."""
    error: str | None = None
    message_ids: tuple[int, ...] = ()
    """Every message it made, in order, when it made several (an album's items); empty when
    it made one (``message_id``) or none. :attr:`all_message_ids` is either."""
    recall: RecallOutcome | None = None
    """What RecallBroadcast did to its messages; ``None`` until it did something."""
    recall_error: str | None = None
    """Telegram's description when ``recall`` is ``FAILED``."""
    content_version: int = 1
    """The content version its send, or the last edit that reached it, was of (see
    ``Broadcast.content_version``): its messages carry it unless ``edit`` says otherwise."""
    edit: EditOutcome | None = None
    """What that edit did; ``None`` until an edit reached it."""
    edit_error: str | None = None
    """Telegram's description when ``edit`` is ``FAILED``."""
    stars_milli: int = 0
    """The estimated Stars a paid send cost, in thousandths (0 at the free rate)."""
    variant: str | None = None
    """The name of the variant it was sent (``None``: the broadcast has none)."""
    click: str | None = None
    """On a click's event only: the link the recipient opened (its first time)."""
    clicks: int = 0
    """In a replay of a tracked broadcast: the links the recipient opened (live, each is a
    click event of its own)."""

    @property
    def all_message_ids(self) -> tuple[int, ...]:
        """Every message the delivery made, in order (for recalling or editing them)."""
        if self.message_ids:
            return self.message_ids
        return () if self.message_id is None else (self.message_id,)


@dataclass(frozen=True, slots=True, kw_only=True)
class ClickCounts:
    """A broadcast's unique clicks (a recipient's first click on a link)."""

    clicks: int = 0
    clickers: int = 0
    """Recipients who opened at least one link."""
    by_link: Mapping[tuple[str | None, int], int] = field(default_factory=dict)
    """By variant name (``None``: no variants) and the link's position in its message."""
    by_variant: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class Delivery:
    """One recipient of a broadcast as a report shows it, in any state.

    ``finished_at`` is ``None`` exactly while ``state`` is ``PENDING``; ``message_id`` is set
    for ``SENT`` (the first message's id; ``message_ids`` has every message's when there were
    several), ``error`` holds Telegram's description for the other final states.
    """

    user_id: int
    state: DeliveryState
    finished_at: datetime | None = None
    message_id: int | None = None
    error: str | None = None
    message_ids: tuple[int, ...] = ()
    recall: RecallOutcome | None = None
    recall_error: str | None = None
    content_version: int = 1
    """The content version its send, or the last edit that reached it, was of (see
    ``Broadcast.content_version``): its messages carry it unless ``edit`` says otherwise."""
    edit: EditOutcome | None = None
    """What that edit did; ``None`` until an edit reached it."""
    edit_error: str | None = None
    """Telegram's description when ``edit`` is ``FAILED``."""
    variant: str | None = None
    """The variant its send was of (``None``: not sent yet, or no variants)."""
    clicks: int = 0
    """Tracked links of its message the recipient opened (each counted once)."""

    @property
    def all_message_ids(self) -> tuple[int, ...]:
        """Every message the delivery made, in order."""
        if self.message_ids:
            return self.message_ids
        return () if self.message_id is None else (self.message_id,)


@dataclass(frozen=True, slots=True, kw_only=True)
class UserProfile:
    """What a bot tells us about a user (the input of an upsert)."""

    id: int
    username: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    language_code: str | None = None
    tags: tuple[str, ...] | None = None
    """The user's tags after the upsert (replacing the stored ones); ``None`` keeps them."""


@dataclass(frozen=True, slots=True, kw_only=True)
class User:
    """A stored user. Inactive users are left out of ``all_users`` and filter broadcasts.

    ``blocked_reason`` says why an inactive user is inactive (``"blocked"`` or
    ``"deactivated"``, the delivery outcome that made it so; ``None`` otherwise) and
    ``blocked_at`` since when; an upsert makes the user active again and clears both.
    """

    id: int
    username: str | None
    first_name: str | None
    last_name: str | None
    language_code: str | None
    active: bool
    created_at: datetime
    updated_at: datetime
    tags: tuple[str, ...] = ()
    """Sorted."""
    blocked_reason: str | None = None
    blocked_at: datetime | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class UserFilter:
    """Selects users: those having at least one of ``tags`` (when given) and whose
    ``language_code`` is one of ``language_codes`` (when given). Empty matches everyone.
    Audiences add "active only"."""

    tags: tuple[str, ...] = ()
    language_codes: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class UserPage:
    """One page of users, ordered by id; ``next_after`` is ``None`` on the last page."""

    users: tuple[User, ...]
    next_after: int | None
