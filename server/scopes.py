"""Which scope each request needs: one table for both transports.

Every gRPC method of ``BroadcastService`` (:data:`GRPC`, by its short name) and every REST
route that needs a token (:data:`REST`, by method and route template) maps to exactly one
:class:`Rule`; a test checks both tables against the service descriptor and the router, so a
new method or route cannot slip through. The health service, reflection, the probes,
``/metrics``, ``/openapi.json`` and the dashboard's files (``/ui/``) need no token, hence no
scope; ``GET /v1/token`` and ``GetToken`` (what the calling token may do) need a token but no
scope. A method
or route missing from the table is refused (PERMISSION_DENIED / 403), never served.

A token without the rule's scope is refused: 403 / PERMISSION_DENIED, ``this token lacks
the scope <scope>``. The bots are checked per request, not here: the bot a request names
(:meth:`~tgbroadcast.server.auth.Caller.bot_for`: 403 / PERMISSION_DENIED for one the token
may not use), and the broadcasts the token may see (the service answers one of another bot
as not found, and lists none: :mod:`tgbroadcast.core.service.bot_access`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from tgbroadcast.core.domain.access import (
    BOTS_ADMIN,
    BROADCASTS_CONTROL,
    BROADCASTS_READ,
    BROADCASTS_SEND,
    USERS_READ,
    USERS_WRITE,
)
from tgbroadcast.server.auth import Caller


@dataclass(frozen=True, slots=True)
class Rule:
    scope: str | None
    """None: any valid token (the route tells a token about itself only)."""


SEND: Final = Rule(BROADCASTS_SEND)
READ: Final = Rule(BROADCASTS_READ)
CONTROL: Final = Rule(BROADCASTS_CONTROL)
USER_WRITE: Final = Rule(USERS_WRITE)
USER_READ: Final = Rule(USERS_READ)
BOTS: Final = Rule(BOTS_ADMIN)
ANY_TOKEN: Final = Rule(None)

GRPC: Final[Mapping[str, Rule]] = {
    "SendMessage": SEND,
    "PreviewMessage": SEND,
    "GetBroadcast": READ,
    "ListBroadcasts": READ,
    "ListDeliveries": READ,
    "WatchBroadcast": READ,
    "WatchBroadcasts": READ,
    "CancelBroadcast": CONTROL,
    "PauseBroadcast": CONTROL,
    "ResumeBroadcast": CONTROL,
    "RecallBroadcast": CONTROL,
    "EditBroadcast": CONTROL,
    "UpsertUsers": USER_WRITE,
    "ImportUsers": USER_WRITE,
    "DeleteUser": USER_WRITE,
    "GetUser": USER_READ,
    "ListUsers": USER_READ,
    "CreateBot": BOTS,
    "ListBots": BOTS,
    "GetBot": BOTS,
    "DeleteBot": BOTS,
    "GetToken": ANY_TOKEN,
}
"""``tgbroadcast.v1.BroadcastService``'s methods by short name."""

BROADCAST: Final = "/v1/broadcasts/{broadcast_id}"
REST: Final[Mapping[tuple[str, str], Rule]] = {
    ("POST", "/send-message"): SEND,
    ("POST", "/v1/broadcasts"): SEND,
    ("POST", "/v1/preview"): SEND,
    ("GET", "/v1/broadcasts"): READ,
    ("GET", "/v1/broadcasts/events"): READ,
    ("GET", BROADCAST): READ,
    ("GET", BROADCAST + "/deliveries"): READ,
    ("GET", BROADCAST + "/deliveries.csv"): READ,
    ("GET", BROADCAST + "/events"): READ,
    ("POST", BROADCAST + "/cancel"): CONTROL,
    ("POST", BROADCAST + "/pause"): CONTROL,
    ("POST", BROADCAST + "/resume"): CONTROL,
    ("POST", BROADCAST + "/recall"): CONTROL,
    ("POST", BROADCAST + "/edit"): CONTROL,
    ("POST", "/v1/users"): USER_WRITE,
    ("POST", "/v1/users/import"): USER_WRITE,
    ("DELETE", "/v1/users/{user_id}"): USER_WRITE,
    ("GET", "/v1/users"): USER_READ,
    ("GET", "/v1/users/{user_id}"): USER_READ,
    ("POST", "/v1/bots"): BOTS,
    ("GET", "/v1/bots"): BOTS,
    ("GET", "/v1/bots/{name}"): BOTS,
    ("DELETE", "/v1/bots/{name}"): BOTS,
    ("GET", "/v1/token"): ANY_TOKEN,
}
"""Routes by method (``HEAD`` is ``GET``) and template."""

NOT_COVERED: Final = "no scope covers this method; it is refused"


@dataclass(frozen=True, slots=True)
class Denied:
    """403 / PERMISSION_DENIED with this detail."""

    detail: str


def lacks_scope(scope: str) -> str:
    return f"this token lacks the scope {scope}"


def judge(caller: Caller, rule: Rule | None) -> Denied | None:
    """Why ``caller`` may not make a request under ``rule``; None when it may."""
    if rule is None:
        return Denied(NOT_COVERED)
    if rule.scope is not None and rule.scope not in caller.scopes:
        return Denied(lacks_scope(rule.scope))
    return None


def rest_rule(method: str, route: str, rules: Mapping[tuple[str, str], Rule] = REST) -> Rule | None:
    return rules.get(("GET" if method == "HEAD" else method, route))
