"""Protobuf at the edge, for the reports: delivery outcomes and ``ListDeliveries``."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from tgbroadcast.core.domain.model import Delivery, DeliveryState
from tgbroadcast.core.service.reports import DeliveriesPage
from tgbroadcast.server.grpc.messages import edit, recall, timestamp
from tgbroadcast.v1 import broadcast_pb2 as pb

_OUTCOME_PREFIX: Final = "DELIVERY_OUTCOME_"
_OUTCOME_TO_PB: Final = {
    state: pb.DeliveryOutcome.Value(_OUTCOME_PREFIX + state.name) for state in DeliveryState
}


def outcome_names(values: Iterable[int]) -> list[str]:
    """The REST spellings of proto outcomes (``DELIVERY_OUTCOME_PENDING`` → ``pending``);
    unspecified or unknown numbers give names validation refuses, naming the value."""
    names: list[str] = []
    for value in values:
        try:
            name = pb.DeliveryOutcome.Name(value)  # type: ignore[arg-type]
        except ValueError:
            names.append(f"unknown enum value {value}")
            continue
        names.append(name.removeprefix(_OUTCOME_PREFIX).lower())
    return names


def delivery(value: Delivery) -> pb.DeliveryResult:
    message = pb.DeliveryResult(
        user_id=value.user_id,
        outcome=_OUTCOME_TO_PB[value.state],
        error=value.error or "",
        message_id=value.message_id or 0,
        message_ids=value.all_message_ids,
        recall=recall(value.recall),
        recall_error=value.recall_error or "",
        content_version=value.content_version if value.state is DeliveryState.SENT else 0,
        edit=edit(value.edit),
        edit_error=value.edit_error or "",
        variant=value.variant or "",
        clicks=value.clicks,
    )
    if value.finished_at is not None:
        message.finished_at.CopyFrom(timestamp(value.finished_at))
    return message


def list_deliveries_response(page: DeliveriesPage) -> pb.ListDeliveriesResponse:
    return pb.ListDeliveriesResponse(
        results=[delivery(d) for d in page.deliveries], next_page_token=page.next_page_token
    )
