"""aiogram imported without building every Bot API model it has (#14.5, a worker's cold start).

``import aiogram`` builds a pydantic schema for each of its ~400 types and ~200 methods: its
``types/__init__.py`` ends with ``model_rebuild()`` on every type, given a namespace of all of
them, and each method's schema is built as its class is made. That was 1.5-2 s of a worker's
2.5-3 s start, for a worker that sends with a few dozen of them (docs/profiles.md).

:func:`import_aiogram` imports aiogram with that loop's builds left out and the namespace each
type was given kept, then gives aiogram's model bases a ``model_rebuild`` that passes a type its
namespace (any other model, the loop's) when its caller passes none. Every aiogram model is then
built by pydantic itself on its first use (pydantic's deferred build: aiogram declares its types
``defer_build``; a method whose class could not be built is completed the same way), with the
namespace aiogram's loop would have given it — the same models, built later and only when
used: a test compares their JSON schemas with an eagerly imported aiogram's. A worker builds
those it uses as it starts (:func:`~tgbroadcast.worker.aiogram_models.build_models`, which then
calls :func:`built_up_front`); one built after that is logged (a warning: a send waited for it).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel

logger = logging.getLogger(__name__)

_REBUILD = BaseModel.__dict__["model_rebuild"]
"""pydantic's own ``BaseModel.model_rebuild`` (a classmethod)."""

_TYPES_MODULES = "aiogram.types."

LATE_BUILD = "built at its first use, after start-up"
"""What the warning of a model built after :func:`built_up_front` says (tests look for it)."""

_up_front = False
"""Whether the models a process uses are built (:func:`built_up_front`)."""


def import_aiogram() -> bool:
    """Import aiogram, its models built on their first use; False (and nothing changed) if it
    was imported already, by this function or as usual. If aiogram no longer builds its types
    in that loop, nothing is left out and it is imported as it is.

    Call it once, from the main thread, before anything imports aiogram: while aiogram is
    imported, pydantic's ``BaseModel.model_rebuild`` is replaced for the whole process."""
    if "aiogram" in sys.modules:
        return False
    deferred: dict[type[BaseModel], Mapping[str, Any]] = {}

    def deferring(cls: type[BaseModel], /, **kwargs: Any) -> bool | None:
        namespace = kwargs.get("_types_namespace")
        # The loop's call: a type, and a namespace of every type (itself included).
        if (
            namespace is not None
            and cls.__module__.startswith(_TYPES_MODULES)
            and namespace.get(cls.__name__) is cls
        ):
            deferred[cls] = namespace
            return None
        # One frame more between pydantic's method and the caller whose namespace it reads.
        kwargs["_parent_namespace_depth"] = kwargs.get("_parent_namespace_depth", 2) + 1
        result: bool | None = _REBUILD.__func__(cls, **kwargs)
        return result

    setattr(BaseModel, "model_rebuild", classmethod(deferring))  # noqa: B010 - mypy: a method
    try:
        import aiogram  # noqa: F401 - imported here, with the loop's builds left out
    finally:
        setattr(BaseModel, "model_rebuild", _REBUILD)  # noqa: B010
    if deferred:
        _complete_with(deferred)
    return True


def built_up_front() -> None:
    """The models this process uses are built: any aiogram model built from now on is
    logged, as a send waited for it (a worker's are listed in
    :data:`~tgbroadcast.worker.aiogram_models.MODELS`)."""
    global _up_front
    _up_front = True


def _complete_with(deferred: Mapping[type[BaseModel], Mapping[str, Any]]) -> None:
    """Give aiogram's model bases a ``model_rebuild`` that resolves a deferred type's
    annotations in the namespace it was given, any other model's in the loop's, when its caller
    gives none: pydantic's build on first use gives none."""
    from aiogram import types
    from aiogram.methods.base import Response, TelegramMethod
    from aiogram.types.base import TelegramObject

    # Each namespace kept is one of every type (see ``deferring``): Message's, or any.
    loops = deferred.get(types.Message) or next(iter(deferred.values()))

    def rebuild(cls: type[BaseModel], /, **kwargs: Any) -> bool | None:
        if kwargs.get("_types_namespace") is None:
            kwargs["_types_namespace"] = deferred.get(cls, loops)
        if _up_front and not cls.__pydantic_complete__:
            logger.warning("aiogram's %s %s (a send waited for it)", cls.__name__, LATE_BUILD)
        result: bool | None = _REBUILD.__func__(cls, **kwargs)
        return result

    for base in (TelegramObject, TelegramMethod, Response):
        setattr(base, "model_rebuild", classmethod(rebuild))  # noqa: B010
