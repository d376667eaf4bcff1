"""Protobuf at the edge: the one place API messages become domain values and back."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Final

from google.protobuf.timestamp_pb2 import Timestamp

from tgbroadcast.core.domain.model import (
    Broadcast,
    BroadcastStatus,
    ClickCounts,
    DeliveryResult,
    DeliveryState,
    EditOutcome,
    MediaType,
    RecallOutcome,
    User,
    UserFilter,
    UserProfile,
    Variant,
)
from tgbroadcast.core.domain.recipients import packed_ids
from tgbroadcast.core.rules.validation import SendRequest
from tgbroadcast.core.rules.variants import VariantInput
from tgbroadcast.core.service.clicks import LinkClicks
from tgbroadcast.core.service.cursors import NO_FLOOR, Floor, with_floor
from tgbroadcast.core.service.watch_updates import WatchUpdate
from tgbroadcast.server.grpc import content, controls
from tgbroadcast.server.streams import PerUpdate
from tgbroadcast.v1 import broadcast_pb2 as pb

_MEDIA_PREFIX = "MEDIA_TYPE_"

_STATUS_TO_PB = {
    BroadcastStatus.QUEUED: pb.BROADCAST_STATUS_QUEUED,
    BroadcastStatus.RUNNING: pb.BROADCAST_STATUS_RUNNING,
    BroadcastStatus.COMPLETED: pb.BROADCAST_STATUS_COMPLETED,
    BroadcastStatus.FAILED: pb.BROADCAST_STATUS_FAILED,
    BroadcastStatus.SCHEDULED: pb.BROADCAST_STATUS_SCHEDULED,
    BroadcastStatus.PAUSED: pb.BROADCAST_STATUS_PAUSED,
    BroadcastStatus.CANCELLED: pb.BROADCAST_STATUS_CANCELLED,
    BroadcastStatus.RECALLING: pb.BROADCAST_STATUS_RECALLING,
    BroadcastStatus.RECALLED: pb.BROADCAST_STATUS_RECALLED,
}
_RECALL_TO_PB = {
    outcome: pb.RecallOutcome.Value("RECALL_OUTCOME_" + outcome.name) for outcome in RecallOutcome
}
_EDIT_TO_PB = {
    outcome: pb.EditOutcome.Value("EDIT_OUTCOME_" + outcome.name) for outcome in EditOutcome
}
_MEDIA_TO_PB = {
    media_type: pb.MediaType.Value(_MEDIA_PREFIX + media_type.name) for media_type in MediaType
}
_OUTCOME_TO_PB = {
    state: pb.DeliveryOutcome.Value("DELIVERY_OUTCOME_" + state.name)
    for state in DeliveryState
    if state.is_final
}


def media_type_name(value: int) -> str:
    """The REST spelling of a proto MediaType (``MEDIA_TYPE_PHOTO`` → ``photo``).

    Unspecified is ``""`` (text); an unknown number gives a name validation will refuse.
    """
    if value == pb.MEDIA_TYPE_UNSPECIFIED:
        return ""
    try:
        name = pb.MediaType.Name(value)  # type: ignore[arg-type]
    except ValueError:
        return f"unknown enum value {value}"
    return name.removeprefix(_MEDIA_PREFIX).lower()


def send_request(message: pb.SendMessageRequest) -> SendRequest:
    return SendRequest(
        message=message.message,
        media_type=media_type_name(message.media_type),
        media_url=message.media_url,
        user_ids=packed_ids(message.user_ids),
        all_users=message.all_users,
        filter=user_filter(message.filter) if message.HasField("filter") else None,
        allow_paid_broadcast=message.allow_paid_broadcast,
        media_data=message.media_data,
        media_filename=message.media_filename,
        callback_url=message.callback_url,
        send_at=controls.send_at(message),
        idempotency_key=message.idempotency_key,
        max_stars=message.max_stars,
        variants=tuple(_variant_input(v) for v in message.variants),
        track_clicks=message.track_clicks,
        **content.send_fields(message),
    )


def _variant_input(message: pb.Variant) -> VariantInput:
    return VariantInput(
        name=message.name,
        weight=message.weight,
        language_codes=tuple(message.language_codes),
        content=SendRequest(
            message=message.message,
            media_type=media_type_name(message.media_type),
            media_url=message.media_url,
            media_data=message.media_data,
            media_filename=message.media_filename,
            **content.send_fields(message),
        ),
    )


def timestamp(value: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(value)
    return stamp


def broadcast(
    value: Broadcast,
    outcome_counts: Mapping[DeliveryState, int],
    recall_counts: Mapping[RecallOutcome, int] | None = None,
    edit_counts: Mapping[EditOutcome, int] | None = None,
    variant_counts: Mapping[str, Mapping[DeliveryState, int]] | None = None,
    clicks: ClickCounts | None = None,
    links: Sequence[LinkClicks] = (),
) -> pb.Broadcast:
    message = pb.Broadcast(
        broadcast_id=value.id,
        status=_STATUS_TO_PB[value.status],
        total=value.total,
        sent=value.sent,
        failed=value.failed,
        pending=value.pending,
        message=value.content.message,
        media_type=_MEDIA_TO_PB[value.content.media_type],
        parse_mode=content.parse_mode(value.content.options.parse_mode),
        media_url=value.content.media_url or "",
        created_at=timestamp(value.created_at),
        error=value.error or "",
        outcome_counts={state.value: count for state, count in outcome_counts.items()},
        allow_paid_broadcast=value.content.allow_paid_broadcast,
        callback_url=value.callback_url or "",
        bot=value.bot,
        recalled=value.recalled,
        recall_counts={outcome.value: n for outcome, n in (recall_counts or {}).items()},
        content_version=value.content_version,
        editing=value.editing,
        edited=value.edited,
        edit_counts={outcome.value: n for outcome, n in (edit_counts or {}).items()},
        max_stars=value.max_stars or 0,
        stars_spent_estimate=value.stars_spent_estimate,
        variants=[
            _variant_report(
                v,
                (variant_counts or {}).get(v.name, {}),
                (clicks or ClickCounts()).by_variant.get(v.name, 0),
            )
            for v in value.variants
        ],
        track_clicks=value.click_key is not None,
        clicks=(clicks or ClickCounts()).clicks,
        clickers=(clicks or ClickCounts()).clickers,
        link_clicks=[
            pb.LinkClicks(variant=k.variant or "", link=k.link, url=k.url, clicks=k.clicks)
            for k in links
        ],
    )
    if value.finished_at is not None:
        message.finished_at.CopyFrom(timestamp(value.finished_at))
    if value.recall_at is not None:
        message.recall_at.CopyFrom(timestamp(value.recall_at))
    if value.edit_at is not None:
        message.edit_at.CopyFrom(timestamp(value.edit_at))
    if value.paid_stopped_at is not None:
        message.paid_stopped_at.CopyFrom(timestamp(value.paid_stopped_at))
    if (throttled := value.throttled_at(datetime.now(UTC))) is not None:
        message.throttled_until.CopyFrom(timestamp(throttled))
    controls.fill_broadcast(message, value)
    return message


def _variant_report(
    value: Variant, counts: Mapping[DeliveryState, int], clicks: int
) -> pb.VariantReport:
    sent = counts.get(DeliveryState.SENT, 0)
    return pb.VariantReport(
        name=value.name,
        weight=value.weight,
        language_codes=value.language_codes,
        message=value.content.message,
        media_type=_MEDIA_TO_PB[value.content.media_type],
        media_url=value.content.media_url or "",
        sent=sent,
        failed=sum(counts.values()) - sent,
        outcome_counts={state.value: n for state, n in counts.items()},
        clicks=clicks,
    )


def status(value: BroadcastStatus) -> pb.BroadcastStatus.ValueType:
    return _STATUS_TO_PB[value]


def recall(value: RecallOutcome | None) -> pb.RecallOutcome.ValueType:
    return pb.RECALL_OUTCOME_UNSPECIFIED if value is None else _RECALL_TO_PB[value]


def edit(value: EditOutcome | None) -> pb.EditOutcome.ValueType:
    return pb.EDIT_OUTCOME_UNSPECIFIED if value is None else _EDIT_TO_PB[value]


def delivery_result(value: DeliveryResult) -> pb.DeliveryResult:
    return pb.DeliveryResult(
        user_id=value.user_id,
        outcome=_OUTCOME_TO_PB[value.state],
        error=value.error or "",
        message_id=value.message_id or 0,
        finished_at=timestamp(value.finished_at),
        message_ids=value.all_message_ids,
        recall=recall(value.recall),
        recall_error=value.recall_error or "",
        content_version=value.content_version,
        edit=edit(value.edit),
        edit_error=value.edit_error or "",
        variant=value.variant or "",
        click=value.click or "",
        clicks=value.clicks,
    )


_SHARED_RESULT: PerUpdate[DeliveryResult, pb.DeliveryResult] = PerUpdate(delivery_result)
"""An outcome's message, built once for all the streams that send it."""


def watch_update(value: WatchUpdate, floor: Floor = NO_FLOOR) -> pb.WatchBroadcastResponse:
    """``value``'s message; ``floor``: the watch's (:mod:`~tgbroadcast.core.service.cursors`),
    which its cursor carries."""
    response = _watch_message(value, floor)
    if value.result is not None:
        response.result.CopyFrom(_SHARED_RESULT(value.result))
    return response


def watch_batch(
    values: Sequence[WatchUpdate], floor: Floor = NO_FLOOR
) -> pb.WatchBroadcastResponse:
    """A batched ``WatchBroadcast`` message: these outcomes in ``results``, with the progress
    and cursor of the last (with the watch's ``floor``). Built once for every stream that
    sends the same updates with the same floor (the watchers at the same place share them):
    the latest :data:`_BATCHES_KEPT` are kept."""
    first, last = values[0], values[-1]
    key = (id(last), floor)
    kept = _batches.get(key)
    if kept is not None and kept[0] is first and kept[1] is last and kept[2] == len(values):
        return kept[3]
    response = _watch_message(last, floor)
    response.results.extend(
        [_SHARED_RESULT(value.result) for value in values if value.result is not None]
    )
    if len(_batches) >= _BATCHES_KEPT:
        _batches.popitem(last=False)  # the oldest
    _batches[key] = (first, last, len(values), response)
    return response


_BATCHES_KEPT: Final = 1024
_batches: OrderedDict[
    tuple[int, Floor], tuple[WatchUpdate, WatchUpdate, int, pb.WatchBroadcastResponse]
] = OrderedDict()
"""Batched messages by their last update's identity and the floor (with the updates, so the
identity stays theirs)."""


def _watch_message(value: WatchUpdate, floor: Floor = NO_FLOOR) -> pb.WatchBroadcastResponse:
    """``value``'s counters and cursor (with ``floor``), without its outcome."""
    return pb.WatchBroadcastResponse(
        progress=pb.Progress(
            status=_STATUS_TO_PB[value.status],
            total=value.total,
            sent=value.sent,
            failed=value.failed,
            pending=value.pending,
            recalled=value.recalled,
            edited=value.edited,
        ),
        # A shared update's cursor has none (an opening's has its own); NO_FLOOR by identity.
        cursor=(
            with_floor(value.cursor, floor)
            if floor is not NO_FLOOR and value.floor is NO_FLOOR
            else value.cursor
        ),
    )


def user_filter(message: pb.UserFilter) -> UserFilter:
    return UserFilter(tags=tuple(message.tags), language_codes=tuple(message.language_codes))


def user_profile(message: pb.User) -> UserProfile:
    """An upsert always sets the user's tags (no tags given: none), as the proto says."""
    return UserProfile(
        id=message.id,
        username=message.username or None,
        first_name=message.first_name or None,
        last_name=message.last_name or None,
        language_code=message.language_code or None,
        tags=tuple(message.tags),
    )


def user(value: User) -> pb.User:
    message = pb.User(
        id=value.id,
        username=value.username or "",
        first_name=value.first_name or "",
        last_name=value.last_name or "",
        language_code=value.language_code or "",
        active=value.active,
        created_at=timestamp(value.created_at),
        updated_at=timestamp(value.updated_at),
        tags=value.tags,
        blocked_reason=value.blocked_reason or "",
    )
    if value.blocked_at is not None:
        message.blocked_at.CopyFrom(timestamp(value.blocked_at))
    return message
