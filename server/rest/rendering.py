"""JSON renderings of the domain's values for REST answers: broadcasts, users, times and
problems.

Field names are the proto's snake_case names, ids are JSON numbers, enums are lower-case
words (``"photo"``, ``"queued"``), times are RFC 3339 in UTC (``...Z``) or ``null``. Errors
are ``application/problem+json`` (RFC 9457) with a precise ``detail``; validation errors add
``errors: [{"field", "message"}]``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any, Final

from aiohttp import web

from tgbroadcast.core.domain.errors import FieldViolation
from tgbroadcast.core.domain.model import Broadcast, DeliveryState, User, Variant
from tgbroadcast.core.service.broadcasting import BroadcastReport

PROBLEM_JSON: Final = "application/problem+json"


def timestamp(value: datetime | None) -> str | None:
    """RFC 3339 in UTC with ``Z``; ``None`` stays ``None`` (JSON ``null``)."""
    return None if value is None else value.isoformat().replace("+00:00", "Z")


def problem(
    status: int,
    detail: str,
    *,
    errors: list[FieldViolation] | None = None,
    extra: dict[str, Any] | None = None,
) -> web.Response:
    """``extra``: RFC 9457 extension members (e.g. a conflict's current ``state``)."""
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
        **(extra or {}),
    }
    if errors:
        body["errors"] = [{"field": e.field, "message": e.description} for e in errors]
    headers = {"WWW-Authenticate": 'Bearer realm="tgbroadcast"'} if status == 401 else None
    return web.Response(
        status=status, text=json.dumps(body), content_type=PROBLEM_JSON, headers=headers
    )


def broadcast_json(report: BroadcastReport) -> dict[str, Any]:
    """A broadcast with its counts per outcome (empty in lists)."""
    broadcast = report.broadcast
    return {
        "broadcast_id": broadcast.id,
        "bot": broadcast.bot,
        "status": broadcast.status.value,
        "total": broadcast.total,
        "sent": broadcast.sent,
        "failed": broadcast.failed,
        "pending": broadcast.pending,
        "message": broadcast.content.message,
        "media_type": broadcast.content.media_type.value,
        "media_url": broadcast.content.media_url or "",
        "parse_mode": broadcast.content.options.parse_mode or "",
        "created_at": timestamp(broadcast.created_at),
        "finished_at": timestamp(broadcast.finished_at),
        "error": broadcast.error,
        "outcome_counts": {state.value: n for state, n in report.outcome_counts.items()},
        "allow_paid_broadcast": broadcast.content.allow_paid_broadcast,
        "callback_url": broadcast.callback_url or "",
        "send_at": timestamp(broadcast.send_at),
        "started_at": timestamp(broadcast.started_at),
        "idempotency_key": broadcast.idempotency_key or "",
        "created_by": broadcast.created_by,
        "actions": [
            {"action": action.action.value, "actor": action.actor, "at": timestamp(action.at)}
            for action in broadcast.actions
        ],
        "recall_at": timestamp(broadcast.recall_at),
        "recalled": broadcast.recalled,
        "recall_counts": {outcome.value: n for outcome, n in report.recall_counts.items()},
        "content_version": broadcast.content_version,
        "edit_at": timestamp(broadcast.edit_at),
        "editing": broadcast.editing,
        "edited": broadcast.edited,
        "edit_counts": {outcome.value: n for outcome, n in report.edit_counts.items()},
        "throttled_until": timestamp(broadcast.throttled_at(datetime.now(UTC))),
        "max_stars": broadcast.max_stars,
        "stars_spent_estimate": broadcast.stars_spent_estimate,
        "paid_stopped_at": timestamp(broadcast.paid_stopped_at),
        "variants": [
            _variant_json(
                v,
                report.variant_counts.get(v.name, {}),
                report.clicks.by_variant.get(v.name, 0),
            )
            for v in broadcast.variants
        ],
        "track_clicks": broadcast.click_key is not None,
        "clicks": report.clicks.clicks,
        "clickers": report.clicks.clickers,
        "link_clicks": [
            {"variant": k.variant, "link": k.link, "url": k.url, "clicks": k.clicks}
            for k in report.links
        ],
    }


def _variant_json(
    variant: Variant, counts: Mapping[DeliveryState, int], clicks: int
) -> dict[str, Any]:
    sent = counts.get(DeliveryState.SENT, 0)
    return {
        "name": variant.name,
        "weight": variant.weight,
        "language_codes": list(variant.language_codes),
        "message": variant.content.message,
        "media_type": variant.content.media_type.value,
        "media_url": variant.content.media_url or "",
        "sent": sent,
        "failed": sum(counts.values()) - sent,
        "outcome_counts": {state.value: n for state, n in counts.items()},
        "clicks": clicks,
    }


def listed_broadcast_json(broadcast: Broadcast) -> dict[str, Any]:
    """A broadcast as lists and lifecycle answers show it: no counts per outcome."""
    return broadcast_json(BroadcastReport(broadcast=broadcast, outcome_counts={}))


def user_json(user: User) -> dict[str, Any]:
    return {
        "id": user.id,
        "username": user.username,
        "first_name": user.first_name,
        "last_name": user.last_name,
        "language_code": user.language_code,
        "active": user.active,
        "created_at": timestamp(user.created_at),
        "updated_at": timestamp(user.updated_at),
        "tags": list(user.tags),
        "blocked_reason": user.blocked_reason,
        "blocked_at": timestamp(user.blocked_at),
    }
