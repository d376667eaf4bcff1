"""Chats the simulated Telegram knows, and the states tests declare for them.

A chat's type follows from its id as on Telegram: positive ids are private chats (users),
``-100…`` ids are supergroups (or channels, when declared so), other negative ids are basic
groups. Undeclared chats are in the default state (active unless configured otherwise), so
any chat id works without setup. A declared state answers every send to that chat, for
every bot, with Telegram's error for it; deletes and edits of messages already sent are
refused only where the bot cannot reach the chat (:meth:`Chats.check_reach`).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from tgbroadcast.simulator.envelope import BotApiError, bad_request, forbidden

SUPERGROUP_ID_BASE = -1_000_000_000_000
"""Supergroup and channel ids are ``-100`` followed by the 10-digit channel number."""


class ChatType(enum.StrEnum):
    PRIVATE = "private"
    GROUP = "group"
    SUPERGROUP = "supergroup"
    CHANNEL = "channel"

    @classmethod
    def for_id(cls, chat_id: int) -> ChatType:
        if chat_id > 0:
            return cls.PRIVATE
        if chat_id <= SUPERGROUP_ID_BASE:
            return cls.SUPERGROUP
        return cls.GROUP


class ChatState(enum.StrEnum):
    """What sending to a chat does. Each non-active state is Telegram's error for it."""

    ACTIVE = "active"
    BLOCKED = "blocked"
    """403 Forbidden: bot was blocked by the user."""
    DEACTIVATED = "deactivated"
    """403 Forbidden: user is deactivated."""
    NOT_STARTED = "not_started"
    """403 Forbidden: bot can't initiate conversation with a user."""
    KICKED = "kicked"
    """403 Forbidden: bot was kicked from the (super)group / channel chat."""
    DELETED = "deleted"
    """403 Forbidden: the group chat was deleted."""
    MISSING = "missing"
    """400 Bad Request: chat not found."""
    MIGRATED = "migrated"
    """400 group chat was upgraded to a supergroup chat, with ``migrate_to_chat_id``."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ChatRule:
    """A declared chat. ``migrate_to_chat_id`` is set exactly when ``state`` is MIGRATED."""

    state: ChatState = ChatState.ACTIVE
    chat_type: ChatType | None = None
    migrate_to_chat_id: int | None = None
    username: str | None = None


class Chats:
    """The declared chats, and the checks a send to a chat goes through."""

    def __init__(self, *, default_state: ChatState = ChatState.ACTIVE) -> None:
        self.default_state = default_state
        self._rules: dict[int, ChatRule] = {}
        self._usernames: dict[str, int] = {}

    def clear(self) -> None:
        self._rules.clear()
        self._usernames.clear()

    def declare(
        self,
        chat_id: int,
        state: ChatState = ChatState.ACTIVE,
        *,
        chat_type: ChatType | None = None,
        migrate_to_chat_id: int | None = None,
        username: str | None = None,
    ) -> ChatRule:
        """Declare (or redeclare) a chat. A migrated group gets a ``-100…`` id by default."""
        kind = chat_type or ChatType.for_id(chat_id)
        if state is ChatState.MIGRATED:
            if kind is not ChatType.GROUP:
                raise ValueError("only a basic group (small negative id) can be migrated")
            if migrate_to_chat_id is None:
                migrate_to_chat_id = SUPERGROUP_ID_BASE - abs(chat_id)
        elif migrate_to_chat_id is not None:
            raise ValueError("migrate_to_chat_id is only for the migrated state")
        if kind is ChatType.CHANNEL and chat_id > SUPERGROUP_ID_BASE:
            raise ValueError("a channel id starts with -100")
        rule = ChatRule(
            state=state,
            chat_type=chat_type,
            migrate_to_chat_id=migrate_to_chat_id,
            username=username,
        )
        self._rules[chat_id] = rule
        if username:
            self._usernames[username.lower().lstrip("@")] = chat_id
        return rule

    def rule(self, chat_id: int) -> ChatRule:
        return self._rules.get(chat_id) or ChatRule(state=self.default_state)

    def resolve(self, chat_id: int | str) -> int:
        """The numeric id for a ``chat_id`` parameter. Raises ``chat not found``."""
        if isinstance(chat_id, int):
            return chat_id
        text = chat_id.strip()
        if text.startswith("@"):
            found = self._usernames.get(text[1:].lower())
            if found is not None:
                return found
        elif text.lstrip("-").isdigit():
            return int(text)
        raise bad_request("chat not found")

    def check_send(self, chat_id: int, *, bot_id: int) -> dict[str, Any]:
        """The Chat object for a send by ``bot_id`` to ``chat_id``, or Telegram's refusal."""
        if chat_id == bot_id:
            raise forbidden("bot can't send messages to bots")
        if chat_id == 0:
            raise bad_request("chat not found")
        rule = self.rule(chat_id)
        chat_type = rule.chat_type or ChatType.for_id(chat_id)
        failure = _refusal(rule, chat_type)
        if failure is not None:
            raise failure
        return chat_object(chat_id, chat_type, rule.username)

    def check_reach(self, chat_id: int, *, write: bool = True) -> None:
        """Refuse a delete or an edit in ``chat_id``, or a copy or a forward from it, as
        Telegram does when the bot cannot reach the chat (missing, kicked from it, deleted,
        migrated) or the user's account is deleted (``deactivated``: the Bot API server asks
        for write access to delete and edit, which a deleted account refuses). A user who
        blocked the bot or never started it does not stop the bot from deleting or editing
        what it already sent there; nor does a deleted account a copy or forward from its chat
        (``write=False``: read access)."""
        if chat_id == 0:
            raise bad_request("chat not found")
        rule = self.rule(chat_id)
        if rule.state in _REACHABLE or (not write and rule.state is ChatState.DEACTIVATED):
            return
        failure = _refusal(rule, rule.chat_type or ChatType.for_id(chat_id))
        assert failure is not None
        raise failure


_REACHABLE = frozenset({ChatState.ACTIVE, ChatState.BLOCKED, ChatState.NOT_STARTED})
"""The states in which a bot still deletes and edits the messages it sent to a chat."""


def _refusal(rule: ChatRule, chat_type: ChatType) -> BotApiError | None:
    match rule.state:
        case ChatState.ACTIVE:
            return None
        case ChatState.BLOCKED:
            return forbidden("bot was blocked by the user")
        case ChatState.DEACTIVATED:
            return forbidden("user is deactivated")
        case ChatState.NOT_STARTED:
            return forbidden("bot can't initiate conversation with a user")
        case ChatState.KICKED:
            kind = "group" if chat_type is ChatType.PRIVATE else chat_type.value
            return forbidden(f"bot was kicked from the {kind} chat")
        case ChatState.DELETED:
            return forbidden("the group chat was deleted")
        case ChatState.MISSING:
            return bad_request("chat not found")
        case ChatState.MIGRATED:
            assert rule.migrate_to_chat_id is not None
            return BotApiError(
                400,
                "Bad Request: group chat was upgraded to a supergroup chat",
                {"migrate_to_chat_id": rule.migrate_to_chat_id},
            )


def chat_object(chat_id: int, chat_type: ChatType, username: str | None = None) -> dict[str, Any]:
    """The Bot API Chat object the simulator shows for a chat."""
    chat: dict[str, Any] = {"id": chat_id}
    if chat_type is ChatType.PRIVATE:
        chat["first_name"] = f"User {chat_id}"
    else:
        chat["title"] = f"{chat_type.value.capitalize()} {abs(chat_id)}"
    if username:
        chat["username"] = username.lstrip("@")
    chat["type"] = chat_type.value
    return chat
