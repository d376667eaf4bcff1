"""aiogram imported without building every Bot API model it has (#14.5, a worker's cold start).

``import aiogram`` builds a pydantic schema for each of its ~400 types and ~200 methods: its
``types/__init__.py`` ends with ``model_rebuild()`` on every type, given a namespace of all of
them, and each method's schema is built as its class is made. That was 1.5-2 s of a worker's
2.5-3 s start, for a worker that sends with a few dozen of them (docs/profiles.md).

:func:`import_aiogram` imports aiogram with that loop's builds left out and its namespace kept,
then gives aiogram's model bases a ``model_rebuild`` that passes that namespace when its caller
passes none. Every aiogram model is then built by pydantic itself on its first use (pydantic's
deferred build: aiogram declares its types ``defer_build``; a method whose class could not be
built is completed the same way), with the namespace aiogram's loop would have given it — the
same models, built later and only when used: a test compares every one's JSON schema with an
eagerly imported aiogram's. :func:`build` builds those a process uses up front.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel

_REBUILD = BaseModel.__dict__["model_rebuild"]
"""pydantic's own ``BaseModel.model_rebuild`` (a classmethod)."""

_TYPES_MODULES = "aiogram.types."


def import_aiogram() -> bool:
    """Import aiogram, its models built on their first use; False (and nothing changed) if it
    was imported already (its models were built then). If aiogram no longer builds its types
    in that loop, nothing is left out and it is imported as it is."""
    if "aiogram" in sys.modules:
        return False
    kept: list[Mapping[str, Any]] = []

    def deferring(cls: type[BaseModel], /, **kwargs: Any) -> bool | None:
        namespace = kwargs.get("_types_namespace")
        if namespace is not None and cls.__module__.startswith(_TYPES_MODULES):
            if not kept:
                kept.append(namespace)
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
    if kept:
        _complete_with(kept[0])
    return True


def _complete_with(namespace: Mapping[str, Any]) -> None:
    """Give aiogram's model bases a ``model_rebuild`` that resolves their annotations in
    ``namespace`` when its caller gives none: pydantic's build on first use gives none."""
    from aiogram.methods.base import Response, TelegramMethod
    from aiogram.types.base import TelegramObject

    def rebuild(cls: type[BaseModel], /, **kwargs: Any) -> bool | None:
        if kwargs.get("_types_namespace") is None:
            kwargs["_types_namespace"] = namespace
        result: bool | None = _REBUILD.__func__(cls, **kwargs)
        return result

    for base in (TelegramObject, TelegramMethod, Response):
        setattr(base, "model_rebuild", classmethod(rebuild))  # noqa: B010
