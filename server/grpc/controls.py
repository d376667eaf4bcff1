"""Protobuf at the edge for the lifecycle: ``send_at``, status filters, lifecycle fields
(including ``created_by`` and the recorded ``actions``)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

from tgbroadcast.core.domain.errors import InvalidArgument
from tgbroadcast.core.domain.model import Broadcast, ControlAction
from tgbroadcast.v1 import broadcast_pb2 as pb

_STATUS_PREFIX = "BROADCAST_STATUS_"


def send_at(message: pb.SendMessageRequest) -> datetime | None:
    """The request's ``send_at`` in UTC, or ``None`` when it is not set."""
    if not message.HasField("send_at"):
        return None
    try:
        return message.send_at.ToDatetime(tzinfo=UTC)
    except (ValueError, OverflowError):
        raise InvalidArgument.single("send_at", "is not a valid timestamp") from None


def status_names(values: Iterable[int]) -> list[str]:
    """The REST spelling of each status (``BROADCAST_STATUS_PAUSED`` → ``paused``);
    unspecified or unknown numbers become names validation refuses."""
    names: list[str] = []
    for value in values:
        try:
            name = pb.BroadcastStatus.Name(value)  # type: ignore[arg-type]
        except ValueError:
            name = f"unknown enum value {value}"
        names.append(name.removeprefix(_STATUS_PREFIX).lower())
    return names


def fill_broadcast(message: pb.Broadcast, value: Broadcast) -> None:
    """Set the lifecycle fields of ``message`` from ``value``: times, key, who did what."""
    if value.send_at is not None:
        message.send_at.FromDatetime(value.send_at)
    if value.started_at is not None:
        message.started_at.FromDatetime(value.started_at)
    message.idempotency_key = value.idempotency_key or ""
    message.created_by = value.created_by
    for action in value.actions:
        recorded = message.actions.add(action=_ACTION_TO_PB[action.action], actor=action.actor)
        recorded.at.FromDatetime(action.at)


_ACTION_TO_PB = {
    action: pb.ControlAction.Value("CONTROL_ACTION_" + action.name) for action in ControlAction
}
