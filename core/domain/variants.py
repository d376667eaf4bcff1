"""A broadcast's variants as stored: ``broadcasts.variants`` holds them as one JSON array
(``NULL`` when the broadcast has none), each variant's content in the shape the broadcast's
own columns hold it (text, media, upload name, options). :func:`decode_variants` reads back
exactly what :func:`encode_variants` wrote.
"""

from __future__ import annotations

import json
from typing import Any

from tgbroadcast.core.domain.content import ContentOptions
from tgbroadcast.core.domain.model import Content, MediaType, Variant


def encode_variants(variants: tuple[Variant, ...]) -> str | None:
    """The JSON stored in ``broadcasts.variants``; ``None`` for none."""
    if not variants:
        return None
    return json.dumps([_variant_json(v) for v in variants], separators=(",", ":"))


def decode_variants(text: str | None, *, allow_paid_broadcast: bool) -> tuple[Variant, ...]:
    """The variants :func:`encode_variants` wrote; their contents take the broadcast's
    ``allow_paid_broadcast`` (a flag of the broadcast, not of a variant)."""
    if text is None:
        return ()
    return tuple(_variant(item, allow_paid_broadcast) for item in json.loads(text))


def _variant_json(variant: Variant) -> dict[str, Any]:
    content = variant.content
    options = content.options.to_json()
    return {
        "name": variant.name,
        "weight": variant.weight,
        "language_codes": list(variant.language_codes),
        "message": content.message,
        "media_type": content.media_type.value,
        "media_url": content.media_url,
        "media_upload": content.media_upload,
        "media_filename": content.media_filename,
        "options": None if options is None else json.loads(options),
    }


def _variant(item: dict[str, Any], allow_paid_broadcast: bool) -> Variant:
    options = item.get("options")
    return Variant(
        name=item["name"],
        weight=int(item["weight"]),
        language_codes=tuple(item.get("language_codes", ())),
        content=Content(
            message=item["message"],
            media_type=MediaType(item["media_type"]),
            media_url=item.get("media_url"),
            media_upload=item.get("media_upload"),
            media_filename=item.get("media_filename"),
            allow_paid_broadcast=allow_paid_broadcast,
            options=ContentOptions.from_json(None if options is None else json.dumps(options)),
        ),
    )


__all__ = ["decode_variants", "encode_variants"]
