"""Which scope each request needs: one table for both transports.

Every gRPC method of ``BroadcastService`` (:data:`GRPC`, by its short name) and every REST
route that needs a token (:data:`REST`, by method and route template) maps to exactly one
:class:`Rule`; a test checks both tables against the service descriptor and the router, so a
new method or route cannot slip through. The health service, reflection, the probes,
``/metrics`` and ``/openapi.json`` need no token, hence no scope. A method or route missing
from the table is refused (PERMISSION_DENIED / 403), never served.

A token without the rule's scope is refused: 403 / PERMISSION_DENIED, ``this token lacks
the scope <scope>``. The service has one bot, ``default``; a token that may not use it
(:attr:`~tgbroadcast.server.auth.Caller.bots` holds neither ``default`` nor ``*``) is
treated according to the rule's :class:`BotUse`: refused when it would send or touch users,
and shown no broadcast at all (not found, empty lists) so that it learns nothing of their
existence.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from tgbroadcast.core.domain.access import (
    BROADCASTS_CONTROL,
    BROADCASTS_READ,
    BROADCASTS_SEND,
    DEFAULT_BOT,
    USERS_READ,
    USERS_WRITE,
)
from tgbroadcast.server.auth import Caller


class BotUse(enum.Enum):
    """What a request does with the bot, for a token that may not use it."""

    USE = "use"
    """Sends or touches users: refused, 403 / PERMISSION_DENIED naming the bot."""
    FIND = "find"
    """Finds one broadcast by id: 404 / NOT_FOUND, as for a broadcast that does not exist."""
    LIST = "list"
    """Lists broadcasts: an empty list."""


@dataclass(frozen=True, slots=True)
class Rule:
    scope: str
    bot: BotUse


SEND: Final = Rule(BROADCASTS_SEND, BotUse.USE)
READ_ONE: Final = Rule(BROADCASTS_READ, BotUse.FIND)
READ_LIST: Final = Rule(BROADCASTS_READ, BotUse.LIST)
CONTROL: Final = Rule(BROADCASTS_CONTROL, BotUse.FIND)
USER_WRITE: Final = Rule(USERS_WRITE, BotUse.USE)
USER_READ: Final = Rule(USERS_READ, BotUse.USE)

GRPC: Final[Mapping[str, Rule]] = {
    "SendMessage": SEND,
    "PreviewMessage": SEND,
    "GetBroadcast": READ_ONE,
    "ListBroadcasts": READ_LIST,
    "ListDeliveries": READ_ONE,
    "WatchBroadcast": READ_ONE,
    "CancelBroadcast": CONTROL,
    "PauseBroadcast": CONTROL,
    "ResumeBroadcast": CONTROL,
    "UpsertUsers": USER_WRITE,
    "ImportUsers": USER_WRITE,
    "DeleteUser": USER_WRITE,
    "GetUser": USER_READ,
    "ListUsers": USER_READ,
}
"""``tgbroadcast.v1.BroadcastService``'s methods by short name."""

BROADCAST: Final = "/v1/broadcasts/{broadcast_id}"
REST: Final[Mapping[tuple[str, str], Rule]] = {
    ("POST", "/send-message"): SEND,
    ("POST", "/v1/broadcasts"): SEND,
    ("POST", "/v1/preview"): SEND,
    ("GET", "/v1/broadcasts"): READ_LIST,
    ("GET", BROADCAST): READ_ONE,
    ("GET", BROADCAST + "/deliveries"): READ_ONE,
    ("GET", BROADCAST + "/deliveries.csv"): READ_ONE,
    ("GET", BROADCAST + "/events"): READ_ONE,
    ("POST", BROADCAST + "/cancel"): CONTROL,
    ("POST", BROADCAST + "/pause"): CONTROL,
    ("POST", BROADCAST + "/resume"): CONTROL,
    ("POST", "/v1/users"): USER_WRITE,
    ("POST", "/v1/users/import"): USER_WRITE,
    ("DELETE", "/v1/users/{user_id}"): USER_WRITE,
    ("GET", "/v1/users"): USER_READ,
    ("GET", "/v1/users/{user_id}"): USER_READ,
}
"""Routes by method (``HEAD`` is ``GET``) and template."""

NOT_COVERED: Final = "no scope covers this method; it is refused"


class Verdict(enum.Enum):
    """What becomes of a request once the token is known."""

    SERVE = "serve"
    HIDE_ONE = "hide_one"
    """Answer not found."""
    HIDE_LIST = "hide_list"
    """Answer an empty list."""


@dataclass(frozen=True, slots=True)
class Denied:
    """403 / PERMISSION_DENIED with this detail."""

    detail: str


def lacks_scope(scope: str) -> str:
    return f"this token lacks the scope {scope}"


def judge(caller: Caller, rule: Rule | None) -> Verdict | Denied:
    """The scope first, then the bot rule (see the module's docstring)."""
    if rule is None:
        return Denied(NOT_COVERED)
    if rule.scope not in caller.scopes:
        return Denied(lacks_scope(rule.scope))
    if caller.may_use(DEFAULT_BOT):
        return Verdict.SERVE
    if rule.bot is BotUse.USE:
        return Denied(f"this token may not use the bot {DEFAULT_BOT}")
    return Verdict.HIDE_ONE if rule.bot is BotUse.FIND else Verdict.HIDE_LIST


def rest_rule(method: str, route: str, rules: Mapping[tuple[str, str], Rule] = REST) -> Rule | None:
    return rules.get(("GET" if method == "HEAD" else method, route))
