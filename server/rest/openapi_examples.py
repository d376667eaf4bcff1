"""The OpenAPI document's examples: requests the server accepts and answers it gives (checked
by tests/test_openapi.py, which sends each send example and validates each answer example)."""

from __future__ import annotations

from typing import Any, Final

SEND_EXAMPLES: dict[str, Any] = {
    "text": {"message": "Hello from the broadcast service!", "user_ids": [111, 222, 333]},
    "photo": {
        "message": "<b>Spring sale</b>: everything -20%",
        "parse_mode": "html",
        "media_type": "photo",
        "media_url": "https://example.com/spring.jpg",
        "filter": {"tags": ["vip"], "language_codes": ["en"]},
        "reply_markup": {
            "rows": [{"buttons": [{"text": "Shop now", "url": "https://example.com/shop"}]}]
        },
        "idempotency_key": "spring-sale-2026",
    },
    "scheduled": {
        "message": "Hi {first_name|there}, see you tomorrow!",
        "personalize": True,
        "all_users": True,
        "send_at": "2030-01-01T09:00:00Z",
        "callback_url": "https://example.com/hooks/broadcast-finished",
    },
    "variants": {
        "all_users": True,
        "variants": [
            {"name": "short", "message": "Sale: -20% today", "weight": 1},
            {"name": "long", "message": "Our spring sale is on: everything -20%", "weight": 1},
            {
                "name": "german",
                "message": "Frühlingsangebot: alles -20 %",
                "language_codes": ["de"],
            },
        ],
    },
}
USERS_EXAMPLE: dict[str, Any] = {
    "users": [
        {
            "id": 111,
            "username": "alice",
            "first_name": "Alice",
            "language_code": "en",
            "tags": ["vip"],
        },
        {"id": 222, "first_name": "Bob", "language_code": "de", "tags": []},
    ]
}
PREVIEW_EXAMPLE: dict[str, Any] = {
    "message": {"message": "Hi {first_name|there}!", "personalize": True, "user_ids": [111]},
    "user_id": 111,
}
BROADCAST_EXAMPLE: dict[str, Any] = {
    "broadcast_id": 1,
    "status": "completed",
    "total": 3,
    "sent": 2,
    "failed": 1,
    "pending": 0,
    "message": "Hello from the broadcast service!",
    "media_type": "text",
    "media_url": "",
    "created_at": "2026-05-01T12:00:00Z",
    "started_at": "2026-05-01T12:00:00.120000Z",
    "finished_at": "2026-05-01T12:00:00.450000Z",
    "error": None,
    "outcome_counts": {"sent": 2, "blocked": 1},
    "allow_paid_broadcast": False,
    "created_by": "newsletter",
    "actions": [],
}
NOT_READY_EXAMPLE: dict[str, Any] = {
    "type": "about:blank",
    "title": "Service Unavailable",
    "status": 503,
    "detail": "not ready: database",
    "checks": {"database": "failed (ConnectionRefusedError)", "nats": "ok", "draining": "ok"},
}
PROBLEM_EXAMPLE: dict[str, Any] = {
    "type": "about:blank",
    "title": "Bad Request",
    "status": 400,
    "detail": "user_ids[0]: is not a Telegram chat id",
    "errors": [{"field": "user_ids[0]", "message": "is not a Telegram chat id"}],
}

SSE_EXAMPLE: Final = (
    'id: s17.1.0\nevent: result\ndata: {"user_id":111,'
    '"outcome":"sent","error":null,"message_id":17,'
    '"finished_at":"2026-05-01T12:00:00.2Z",'
    '"message_ids":[17],"progress":'
    '{"status":"running","total":1,"sent":1,'
    '"failed":0,"pending":0}}\n\n'
)
"""An SSE stream's first event."""
