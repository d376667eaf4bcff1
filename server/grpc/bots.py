"""The bots RPCs (scope ``bots:admin``): ``CreateBot``, ``ListBots``, ``GetBot``,
``DeleteBot`` over :class:`~tgbroadcast.core.bots.service.BotService`, and their protobuf.

Zero values mean "not given": a ``rate_limit`` or ``paid_rate_limit`` of 0 and an empty
``api_url`` take the ``telegram:`` section's. A name the API token may not use is refused
with PERMISSION_DENIED on create, and is NOT_FOUND otherwise, as a bot that does not exist.
"""

from __future__ import annotations

from typing import Any

import grpc

from tgbroadcast.core.bots.service import BotInfo, BotService, NewBot, Visible, everyone
from tgbroadcast.core.domain.errors import FailedPrecondition
from tgbroadcast.server.auth import CALLER, current_caller_name
from tgbroadcast.v1 import broadcast_pb2 as pb

Context = grpc.aio.ServicerContext[Any, Any]


def bot_message(bot: BotInfo) -> pb.Bot:
    message = pb.Bot(
        name=bot.name,
        bot_id=bot.bot_id,
        username=bot.username,
        rate_limit=bot.rate_limit,
        paid_rate_limit=bot.paid_rate_limit,
        api_url=bot.api_url,
        source=bot.source,
    )
    if bot.created_at is not None:
        message.created_at.FromDatetime(bot.created_at)
    return message


async def create(
    service: BotService | None, request: pb.CreateBotRequest, context: Context
) -> pb.CreateBotResponse:
    caller = CALLER.get()
    if caller is not None and not caller.may_use(request.name):
        await context.abort(
            grpc.StatusCode.PERMISSION_DENIED,
            f"API token {caller.token_name} may not use bot {request.name[:64]!r}",
        )
    created = await _service(service).create(
        NewBot(
            name=request.name,
            token=request.token,
            rate_limit=request.rate_limit or None,
            paid_rate_limit=request.paid_rate_limit or None,
            api_url=request.api_url or None,
        ),
        created_by=current_caller_name(),
        visible=_visible(),
    )
    return pb.CreateBotResponse(bot=bot_message(created))


async def listed(service: BotService | None) -> pb.ListBotsResponse:
    found = await _service(service).list(visible=_visible())
    return pb.ListBotsResponse(bots=[bot_message(bot) for bot in found])


async def get(service: BotService | None, request: pb.GetBotRequest) -> pb.GetBotResponse:
    found = await _service(service).get(request.name, visible=_visible())
    return pb.GetBotResponse(bot=bot_message(found))


async def delete(service: BotService | None, request: pb.DeleteBotRequest) -> None:
    await _service(service).delete(request.name, visible=_visible())


def _service(service: BotService | None) -> BotService:
    if service is None:
        raise FailedPrecondition("this server does not manage bots", state="no_bots")
    return service


def _visible() -> Visible:
    caller = CALLER.get()
    return everyone if caller is None else caller.may_use
