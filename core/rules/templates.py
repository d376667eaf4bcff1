"""Personalization: ``{first_name}`` placeholders filled from each recipient's user record.

Syntax:

* ``{field}`` — the recipient's value, or nothing when the user has none;
* ``{field|fallback}`` — the fallback when the user has no value (``Hi {first_name|there}``);
* ``{{`` and ``}}`` — literal ``{`` and ``}``.

Fields: ``id``, ``username``, ``first_name``, ``last_name``, ``full_name`` (first and last
name), ``language_code``. Values *and fallbacks* are escaped for the parse mode (HTML:
``&``, ``<``, ``>``, ``"``, ``'``; MarkdownV2: every reserved character and the backslash),
so a user named ``<b>Bob``, ``Ann "Co"`` or ``_*[]`` reads exactly so and never breaks the
markup — in text, in an ``<a href="...">`` attribute or in a MarkdownV2 link's ``(...)``.
A template is checked when the broadcast is created (:func:`parse_template` raises
:class:`TemplateError` for an unknown field or a stray brace); rendering then cannot fail.

Pure functions, no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Final

from tgbroadcast.core.domain.content import ParseMode
from tgbroadcast.core.domain.errors import InvalidArgument
from tgbroadcast.core.domain.model import CAPTION_LIMIT, TEXT_LIMIT, Content, MediaType, UserProfile
from tgbroadcast.core.rules.formatting import FormattingError, escape, parse

FIELDS: Final = ("id", "username", "first_name", "last_name", "full_name", "language_code")


class TemplateError(ValueError):
    """A template is malformed; ``str()`` says where (character positions count from 0)."""


@dataclass(frozen=True, slots=True)
class Placeholder:
    name: str
    fallback: str | None


@dataclass(frozen=True, slots=True)
class Template:
    """A parsed template: literal text and placeholders, in order."""

    parts: tuple[str | Placeholder, ...]

    @property
    def fields(self) -> frozenset[str]:
        return frozenset(p.name for p in self.parts if isinstance(p, Placeholder))

    def render(self, values: Mapping[str, str | None], parse_mode: ParseMode | None) -> str:
        """The text for one recipient: values (or fallbacks) escaped for ``parse_mode``."""
        mode = None if parse_mode is None else parse_mode.telegram
        out: list[str] = []
        for part in self.parts:
            if isinstance(part, str):
                out.append(part)
                continue
            value = values.get(part.name) or part.fallback or ""
            out.append(escape(value, mode))
        return "".join(out)


def parse_template(text: str) -> Template:
    """Parse ``text``; :class:`TemplateError` for an unknown field, an unclosed ``{`` or a
    lone ``}``."""
    parts: list[str | Placeholder] = []
    literal: list[str] = []
    i = 0
    n = len(text)
    while i < n:
        ch = text[i]
        if ch == "{" and text.startswith("{{", i):
            literal.append("{")
            i += 2
        elif ch == "}" and text.startswith("}}", i):
            literal.append("}")
            i += 2
        elif ch == "}":
            raise TemplateError(f"a lone '}}' at character {i}; write '}}}}' for a literal brace")
        elif ch == "{":
            end = text.find("}", i + 1)
            if end < 0:
                raise TemplateError(
                    f"the placeholder at character {i} is not closed; write '{{{{' for a "
                    "literal brace"
                )
            inner = text[i + 1 : end]
            name, bar, fallback = inner.partition("|")
            name = name.strip()
            if "{" in inner:
                raise TemplateError(f"the placeholder at character {i} is not closed")
            if name not in FIELDS:
                raise TemplateError(
                    f"unknown field {name!r} in the placeholder at character {i}; one of "
                    + ", ".join(FIELDS)
                )
            if literal:
                parts.append("".join(literal))
                literal.clear()
            parts.append(Placeholder(name, fallback if bar else None))
            i = end + 1
        else:
            literal.append(ch)
            i += 1
    if literal:
        parts.append("".join(literal))
    return Template(tuple(parts))


def profile_values(user_id: int, profile: UserProfile | None) -> dict[str, str | None]:
    """A recipient's field values; an unknown user has only its ``id``."""
    if profile is None:
        return {"id": str(user_id)}
    names = [name for name in (profile.first_name, profile.last_name) if name]
    return {
        "id": str(user_id),
        "username": profile.username,
        "first_name": profile.first_name,
        "last_name": profile.last_name,
        "full_name": " ".join(names) or None,
        "language_code": profile.language_code,
    }


def personalized(content: Content, user_id: int, profile: UserProfile | None) -> Content:
    """``content`` as ``user_id`` receives it: its text and album captions rendered (the
    same content when it is not personalized). Templates were checked at creation; a stored
    one that no longer parses is a bug and raises :class:`TemplateError`."""
    options = content.options
    if not options.personalize:
        return content
    values = profile_values(user_id, profile)
    mode = options.parse_mode
    message = parse_template(content.message).render(values, mode)
    album = tuple(
        replace(item, caption=parse_template(item.caption).render(values, mode))
        for item in options.album
    )
    return replace(content, message=message, options=replace(options, album=album))


@dataclass(frozen=True, slots=True, kw_only=True)
class Preview:
    """A message as one user would receive it (PreviewMessage)."""

    text: str
    album_captions: tuple[str, ...]
    parse_mode: ParseMode | None
    variant: str | None = None
    """The variant shown, when the message has variants."""


def preview(content: Content, user_id: int, profile: UserProfile | None) -> Preview:
    """What :func:`personalized` makes of ``content`` for this user.

    When a worker would refuse this recipient (:func:`rendered_problem`: the rendered text or
    a caption too long, or the text left empty), the preview is refused the same way:
    :class:`InvalidArgument` naming the field in PreviewMessage's request
    (``message.message``, ``message.album[1].caption``) with the reason the recipient's
    delivery would carry — rather than a text Telegram would not take.
    """
    rendered = personalized(content, user_id, profile)
    if rendered.options.personalize:
        found = _problem(rendered)
        if found is not None:
            raise InvalidArgument.single(found.field, found.reason)
    return Preview(
        text=rendered.message,
        album_captions=tuple(item.caption for item in rendered.options.album),
        parse_mode=rendered.options.parse_mode,
    )


def rendered_problem(content: Content) -> str | None:
    """Why Telegram would refuse a personalized ``content`` (text or a caption too long, or a
    text left empty, after entities parsing); ``None`` when it fits. Per recipient: one long
    name fails that recipient, not the broadcast."""
    found = _problem(content)
    return None if found is None else found.reason


@dataclass(frozen=True, slots=True)
class _Problem:
    """Why Telegram would refuse a personalized text, and the PreviewMessage field (its path)
    that holds the text."""

    field: str
    reason: str


def _problem(content: Content) -> _Problem | None:
    """:func:`rendered_problem`, with the PreviewMessage field it is about."""
    mode = None if content.options.parse_mode is None else content.options.parse_mode.telegram
    texts: list[tuple[str, str, str, int]] = []
    if content.media_type is MediaType.TEXT:
        texts.append(("message.message", "text", content.message, TEXT_LIMIT))
    elif content.media_type.takes_caption:
        texts.append(("message.message", "caption", content.message, CAPTION_LIMIT))
    texts.extend(
        (f"message.album[{i}].caption", f"caption of album item {i}", item.caption, CAPTION_LIMIT)
        for i, item in enumerate(content.options.album)
    )
    for field, what, text, limit in texts:
        try:
            parsed = parse(text, mode)
        except FormattingError as exc:
            return _Problem(field, f"personalized {what}: can't parse entities: {exc}")
        if what == "text" and not parsed.text.strip():
            return _Problem(field, "personalized text is empty for this user")
        if parsed.length > limit:
            return _Problem(
                field,
                f"personalized {what} is {parsed.length} characters for this user; "
                f"Telegram allows at most {limit}",
            )
    return None
