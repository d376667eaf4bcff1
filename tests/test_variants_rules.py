"""Variants' rules (#15.4), without I/O: what a request with variants must look like (every
problem named ``variants[i].…``), how a recipient's variant is chosen (by language first,
then by weight, the same every time), what PreviewMessage shows, and the stored JSON."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from tgbroadcast.core.background.webhooks import summary
from tgbroadcast.core.domain.content import ContentOptions, ParseMode
from tgbroadcast.core.domain.errors import InvalidArgument
from tgbroadcast.core.domain.model import (
    Broadcast,
    BroadcastStatus,
    Content,
    DeliveryState,
    MediaType,
    UserProfile,
    Variant,
)
from tgbroadcast.core.domain.variants import decode_variants, encode_variants
from tgbroadcast.core.rules.idempotency import request_hash
from tgbroadcast.core.rules.validation import SendRequest, validate_content, validate_send
from tgbroadcast.core.rules.variants import VariantInput, candidates, choose, preview_choice


def text(name: str, message: str, weight: int = 0, *languages: str) -> VariantInput:
    return VariantInput(
        name=name,
        weight=weight,
        language_codes=languages,
        content=SendRequest(message=message),
    )


def send(*variants: VariantInput, **fields: object) -> SendRequest:
    return SendRequest(user_ids=(1, 2), variants=variants, **fields)  # type: ignore[arg-type]


def refused(request: SendRequest) -> dict[str, str]:
    with pytest.raises(InvalidArgument) as caught:
        validate_send(request, max_user_ids=100)
    return {v.field: v.description for v in caught.value.violations}


def test_variants_are_validated_and_take_the_broadcasts_flags() -> None:
    new = validate_send(
        send(
            text("A", "Hello <b>there</b>", 3),
            VariantInput(
                name="photo",
                content=SendRequest(
                    message="caption", media_type="photo", media_url="https://e.com/p.jpg"
                ),
            ),
            text("de", "Hallo", 0, "DE", "de-AT", "de"),
            allow_paid_broadcast=True,
            protect_content=True,
        ),
        max_user_ids=100,
    )
    assert [(v.name, v.weight, v.language_codes) for v in new.variants] == [
        ("A", 3, ()),
        ("photo", 1, ()),
        ("de", 1, ("de", "de-at")),
    ]
    assert new.content == new.variants[0].content  # the broadcast's columns: the first's
    assert all(v.content.allow_paid_broadcast for v in new.variants)
    assert all(v.content.options.protect_content for v in new.variants)
    assert new.variants[1].content.media_type is MediaType.PHOTO


def test_every_problem_is_named_by_its_variant() -> None:
    problems = refused(
        send(
            text("a", "x" * 5000),
            text("A", "fine"),
            text("bad name!", "x", 2_000_000, "en", "not a code"),
            VariantInput(name="m", content=SendRequest(media_type="photo")),
            message="top-level text",
        )
    )
    assert "4096" in problems["variants[0].message"]
    assert problems["variants[1].name"] == "'A' is taken by variants[0]"
    assert problems["variants[2].name"].startswith("must be 1-32 characters")
    assert problems["variants[2].weight"] == "must be 1 to 1000000 (0: 1)"
    assert problems["variants[2].language_codes[1]"] == "must be 1-35 letters, digits, - or _"
    assert "required" in problems["variants[3].media_url"]
    assert problems["message"] == "must be empty with variants: each variant has its own"


def test_a_default_variant_and_two_to_ten_are_required() -> None:
    assert (
        "needs a variant without language_codes"
        in refused(send(text("en", "Hi", 0, "en"), text("de", "Hallo", 0, "de")))["variants"]
    )
    # The count alone is wrong: nothing tells the caller to fill the request's own content.
    assert refused(send(text("only", "Hi"))) == {"variants": "has 1; give 2 to 10 variants"}
    many = [text(f"v{i}", "x") for i in range(11)]
    assert refused(send(*many)) == {"variants": "has 11; give 2 to 10 variants"}


def test_uploads_and_albums_in_variants_are_checked_as_a_sends() -> None:
    problems = refused(
        send(
            text("a", "x"),
            VariantInput(
                name="b",
                content=SendRequest(media_type="photo", media_data=b"x" * (10 * 1024 * 1024 + 1)),
            ),
        )
    )
    assert "at most 10485760 bytes" in problems["variants[1].media_data"]


def variant(name: str, weight: int = 1, *languages: str) -> Variant:
    return Variant(
        name=name, content=Content(message=name), weight=weight, language_codes=languages
    )


VARIANTS = (variant("a", 3), variant("b", 1), variant("pt", 1, "pt"), variant("br", 1, "pt-br"))


def test_the_language_decides_first_then_the_default_pool() -> None:
    assert candidates(VARIANTS, "pt-BR") == (3,)
    assert candidates(VARIANTS, "pt") == (2,)
    assert candidates(VARIANTS, "pt-pt") == (2,)  # the primary subtag
    assert candidates(VARIANTS, "de") == (0, 1)
    assert candidates(VARIANTS, None) == (0, 1)


def test_the_choice_is_stable_and_follows_the_weights() -> None:
    chosen = [
        choose(VARIANTS, broadcast_id=7, user_id=user, language_code="en")
        for user in range(1, 8001)
    ]
    again = [
        choose(VARIANTS, broadcast_id=7, user_id=user, language_code="en")
        for user in range(1, 8001)
    ]
    assert chosen == again
    counts = Counter(chosen)
    assert set(counts) == {0, 1}
    assert 0.70 < counts[0] / len(chosen) < 0.80  # weight 3 of 4 (binomial sd: 0.005)
    other = [
        choose(VARIANTS, broadcast_id=8, user_id=user, language_code="en")
        for user in range(1, 8001)
    ]
    assert other != chosen  # another broadcast shuffles the users anew


def test_a_preview_shows_a_named_or_decided_variant() -> None:
    profile = UserProfile(id=5, language_code="pt-br")
    assert preview_choice(VARIANTS, "", broadcast_id=0, user_id=5, profile=profile) == 3
    assert preview_choice(VARIANTS, "B", broadcast_id=0, user_id=5, profile=profile) == 1
    english = UserProfile(id=5, language_code="en")
    with pytest.raises(InvalidArgument) as caught:
        preview_choice(VARIANTS, "", broadcast_id=0, user_id=5, profile=english)
    assert caught.value.violations[0].field == "variant"
    assert "one of a, b by weight" in caught.value.violations[0].description
    stored = preview_choice(VARIANTS, "", broadcast_id=9, user_id=5, profile=english)
    assert stored == choose(VARIANTS, broadcast_id=9, user_id=5, language_code="en")
    with pytest.raises(InvalidArgument, match="no variant is called 'zz'"):
        preview_choice(VARIANTS, "zz", broadcast_id=0, user_id=5, profile=english)


def test_validate_content_returns_the_variants_for_a_preview() -> None:
    content, variants = validate_content(send(text("a", "x"), text("b", "y")))
    assert content.message == "x"
    assert [v.name for v in variants] == ["a", "b"]


def test_variants_survive_their_json() -> None:
    stored = (
        Variant(
            name="rich",
            weight=5,
            language_codes=("en",),
            content=Content(
                message="<b>x</b>",
                media_type=MediaType.PHOTO,
                media_upload="upload-1",
                media_filename="p.jpg",
                allow_paid_broadcast=True,
                options=ContentOptions(parse_mode=ParseMode.HTML, protect_content=True),
            ),
        ),
        variant("plain"),
    )
    text_ = encode_variants(stored)
    assert encode_variants(()) is None
    assert decode_variants(None, allow_paid_broadcast=False) == ()
    back = decode_variants(text_, allow_paid_broadcast=True)
    assert back[0] == stored[0]
    assert back[1].content.allow_paid_broadcast  # the broadcast's flag


def test_the_request_hash_covers_the_variants() -> None:
    first = send(text("a", "x"), text("b", "y"))
    second = send(text("a", "x"), text("b", "z"))
    hashes = {request_hash(validate_send(r, max_user_ids=10), r) for r in (first, first, second)}
    assert len(hashes) == 2


def test_the_completion_webhook_counts_each_variant() -> None:
    at = datetime(2026, 12, 5, tzinfo=UTC)
    broadcast = Broadcast(
        id=3,
        status=BroadcastStatus.COMPLETED,
        content=VARIANTS[0].content,
        total=3,
        sent=2,
        failed=1,
        created_at=at,
        variants=VARIANTS[:2],
    )
    counts = {"a": {DeliveryState.SENT: 2}, "b": {DeliveryState.BLOCKED: 1}}
    document = summary(broadcast, {DeliveryState.SENT: 2, DeliveryState.BLOCKED: 1}, counts)
    assert document["variant_counts"] == {"a": {"sent": 2}, "b": {"blocked": 1}}
    assert "variant_counts" not in summary(replace(broadcast, variants=()), {})
