"""The aiogram models a worker uses, built as it starts (:func:`build_models`).

Imported through :func:`~tgbroadcast.worker.aiogram_loading.import_aiogram`, aiogram builds
each of its models at its first use: for a worker, in the middle of its first sends (a
``Message`` alone takes tens of milliseconds). These are the ones its sends make or parse, built
before it takes a job.
"""

from __future__ import annotations

from typing import get_args

from aiogram.methods import (
    CopyMessage,
    DeleteMessage,
    DeleteMessages,
    ForwardMessage,
    SendMediaGroup,
)
from aiogram.methods.base import Response
from aiogram.types import (
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    InputMediaAnimation,
    LinkPreviewOptions,
    Message,
    MessageEntity,
    MessageId,
    User,
)
from pydantic import BaseModel

from tgbroadcast.worker.aiogram_content import EditCall, InputMedia, SendCall
from tgbroadcast.worker.aiogram_loading import built_up_front

RESPONSES: tuple[type[BaseModel], ...] = (
    Response[Message],
    Response[list[Message]],
    Response[MessageId],
    Response[bool],
    Response[Message | bool],
)
"""The answer models of the methods the sender calls, held for the life of the process.

aiogram parses every answer as ``Response[<the method's result>]``; pydantic caches such
parametrized models only weakly, so after each full garbage collection the next answer
rebuilt the model's schema (tens of milliseconds) — a large share of a busy worker's CPU."""

MODELS: tuple[type[BaseModel], ...] = (
    User,
    MessageEntity,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    LinkPreviewOptions,
    *get_args(InputMedia),
    InputMediaAnimation,
    Message,
    MessageId,
    *get_args(SendCall),
    SendMediaGroup,
    CopyMessage,
    ForwardMessage,
    *get_args(EditCall),
    DeleteMessage,
    DeleteMessages,
    *RESPONSES,
)
"""Every aiogram model a worker's calls make or parse, those they refer to first (a model
built reuses the schemas of those built before it)."""


def build_models() -> None:
    """Build :data:`MODELS` now, those not built yet (with aiogram imported as usual: none);
    any other aiogram model built later is logged (:func:`.aiogram_loading.built_up_front`)."""
    for model in MODELS:
        if not model.__pydantic_complete__:
            model.model_rebuild()
    built_up_front()
