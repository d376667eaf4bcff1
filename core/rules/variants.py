"""Variants: several contents in one broadcast, one per recipient (A/B/n tests and languages).

Rules:

* 2 to :data:`MAX_VARIANTS` variants, each a full content (text, media, album, copy or
  forward, with its own formatting and keyboard), checked as a SendMessage's content is;
  the broadcast's flags (paid, silent, protected, personalized) apply to all. The top-level
  content fields are then empty: each variant carries its own.
* ``name``: 1-32 of ``A-Z a-z 0-9 _ -``, distinct (ignoring case).
* ``language_codes``: a user whose ``language_code`` is one of them gets this variant (``pt``
  also takes ``pt-br`` when no variant names ``pt-br``). Every other user gets one of the
  variants without language codes — at least one must have none: it is the default.
* ``weight`` (1 to :data:`MAX_WEIGHT`; 0 means 1): where several variants qualify, a user
  gets one with probability proportional to its weight.

The choice (:func:`choose`) is a pure function of the broadcast id, the user id, the user's
language code and the variants: a retry, a resume or another worker choosing again for the
same recipient makes the same choice. It hashes with BLAKE2b, never Python's salted
``hash``. The worker records each delivery's variant with its outcome.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Final

from tgbroadcast.core.domain.errors import FieldViolation, InvalidArgument
from tgbroadcast.core.domain.model import Content, UserProfile, Variant

if TYPE_CHECKING:
    from tgbroadcast.core.rules.validation import SendRequest

MIN_VARIANTS: Final = 2
MAX_VARIANTS: Final = 10
MAX_WEIGHT: Final = 1_000_000
MAX_LANGUAGE_CODES: Final = 100
NAME_RULE: Final = "1-32 characters of A-Z, a-z, 0-9, _ and -"
_NAME = re.compile(r"[A-Za-z0-9_-]{1,32}")
_LANGUAGE_CODE = re.compile(r"[a-z0-9_-]{1,35}")
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")

CONTENT_FIELDS: Final = (
    "message",
    "media_type",
    "media_url",
    "media_data",
    "media_filename",
    "parse_mode",
    "entities",
    "reply_markup",
    "link_preview_options",
    "album",
    "source",
)
"""A SendMessage's fields each variant carries instead (the rest are the broadcast's)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class VariantInput:
    """A variant as it came in: its name, weight (0: 1), language codes, and its content as
    a SendMessage's content fields (the request's other fields are ignored)."""

    name: str
    content: SendRequest
    weight: int = 0
    language_codes: Sequence[str] = ()


CheckContent = Callable[["SendRequest", list[FieldViolation]], Content | None]
"""Validates a request's content, adding violations named by the request's own fields."""


def validate_variants(
    request: SendRequest, check_content: CheckContent, violations: list[FieldViolation]
) -> tuple[Variant, ...]:
    """``request.variants`` checked (violations named ``variants[i].…``); each variant's
    content takes the request's paid, silent, protected and personalized flags."""
    given = request.variants
    for field in CONTENT_FIELDS:
        if getattr(request, field):
            violations.append(
                FieldViolation(field, "must be empty with variants: each variant has its own")
            )
    if not MIN_VARIANTS <= len(given) <= MAX_VARIANTS:
        violations.append(
            FieldViolation(
                "variants", f"has {len(given)}; give {MIN_VARIANTS} to {MAX_VARIANTS} variants"
            )
        )
        return ()
    names: dict[str, int] = {}
    variants: list[Variant] = []
    for index, item in enumerate(given):
        where = f"variants[{index}]"
        if not _NAME.fullmatch(item.name):
            violations.append(FieldViolation(f"{where}.name", f"must be {NAME_RULE}"))
        elif (earlier := names.setdefault(item.name.lower(), index)) != index:
            violations.append(
                FieldViolation(f"{where}.name", f"{item.name!r} is taken by variants[{earlier}]")
            )
        if not 0 <= item.weight <= MAX_WEIGHT:
            violations.append(
                FieldViolation(f"{where}.weight", f"must be 1 to {MAX_WEIGHT} (0: 1)")
            )
        languages = _language_codes(item.language_codes, f"{where}.language_codes", violations)
        found: list[FieldViolation] = []
        content = check_content(
            replace(
                item.content,
                allow_paid_broadcast=request.allow_paid_broadcast,
                disable_notification=request.disable_notification,
                protect_content=request.protect_content,
                personalize=request.personalize,
            ),
            found,
        )
        violations.extend(FieldViolation(f"{where}.{v.field}", v.description) for v in found)
        if content is not None:
            variants.append(
                Variant(
                    name=item.name,
                    content=content,
                    weight=item.weight or 1,
                    language_codes=languages,
                )
            )
    if all(item.language_codes for item in given):
        violations.append(
            FieldViolation(
                "variants",
                "needs a variant without language_codes: the default for every other user",
            )
        )
    return tuple(variants)


def _language_codes(
    given: Sequence[str], field: str, violations: list[FieldViolation]
) -> tuple[str, ...]:
    if len(given) > MAX_LANGUAGE_CODES:
        violations.append(FieldViolation(field, f"has {len(given)}; at most {MAX_LANGUAGE_CODES}"))
        return ()
    codes: list[str] = []
    for index, code in enumerate(given):
        lowered = code.translate(_ASCII_LOWER)
        if not _LANGUAGE_CODE.fullmatch(lowered):
            violations.append(
                FieldViolation(f"{field}[{index}]", "must be 1-35 letters, digits, - or _")
            )
        elif lowered not in codes:
            codes.append(lowered)
    return tuple(codes)


def candidates(variants: Sequence[Variant], language_code: str | None) -> tuple[int, ...]:
    """The positions of the variants a user with ``language_code`` may get: those naming the
    language, else those naming its primary subtag (``pt`` for ``pt-br``), else the default
    ones (without language codes)."""
    language = (language_code or "").translate(_ASCII_LOWER)
    if language:
        primary = re.split(r"[-_]", language, maxsplit=1)[0]
        for wanted in (language, primary):
            found = tuple(i for i, v in enumerate(variants) if wanted in v.language_codes)
            if found:
                return found
    return tuple(i for i, v in enumerate(variants) if not v.language_codes)


def choose(
    variants: Sequence[Variant], *, broadcast_id: int, user_id: int, language_code: str | None
) -> int:
    """The position of the variant recipient ``user_id`` of broadcast ``broadcast_id`` gets:
    always the same one for the same inputs."""
    pool = candidates(variants, language_code)
    if len(pool) == 1:
        return pool[0]
    digest = hashlib.blake2b(f"{broadcast_id}:{user_id}".encode(), digest_size=8).digest()
    point = int.from_bytes(digest, "big") % sum(variants[i].weight for i in pool)
    for index in pool:
        if point < variants[index].weight:
            return index
        point -= variants[index].weight
    raise AssertionError("unreachable: point < total weight")


def preview_choice(
    variants: Sequence[Variant],
    name: str,
    *,
    broadcast_id: int,
    user_id: int,
    profile: UserProfile | None,
) -> int:
    """The position of the variant PreviewMessage renders: the one called ``name`` (ignoring
    case), else the user's — of a stored broadcast (``broadcast_id``) as :func:`choose` picks
    it; of a request not sent yet only when the language decides (or one default remains):
    weights pick by the broadcast's id. :class:`InvalidArgument` on ``variant`` otherwise."""
    if name:
        lowered = name.lower()
        for index, variant in enumerate(variants):
            if variant.name.lower() == lowered:
                return index
        known = ", ".join(v.name for v in variants)
        raise InvalidArgument.single("variant", f"no variant is called {name!r}; one of {known}")
    language = None if profile is None else profile.language_code
    if broadcast_id:
        return choose(variants, broadcast_id=broadcast_id, user_id=user_id, language_code=language)
    pool = candidates(variants, language)
    if len(pool) > 1:
        raise InvalidArgument.single(
            "variant",
            f"user {user_id} gets one of {', '.join(variants[i].name for i in pool)} by weight, "
            "chosen once the broadcast exists: name the variant to preview, or preview the "
            "broadcast by broadcast_id",
        )
    return pool[0]


__all__ = [
    "CONTENT_FIELDS",
    "MAX_VARIANTS",
    "MAX_WEIGHT",
    "MIN_VARIANTS",
    "NAME_RULE",
    "VariantInput",
    "candidates",
    "choose",
    "preview_choice",
    "validate_variants",
]
