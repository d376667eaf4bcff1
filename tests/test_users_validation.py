"""Users and audiences checked at the edge: tags and language codes normalized, one audience
per broadcast, and CSV imports parsed into chunks whose errors name the line."""

from __future__ import annotations

from array import array
from collections.abc import AsyncIterator

import pytest

from tgbroadcast.core.domain.errors import InvalidArgument
from tgbroadcast.core.domain.model import (
    UserFilter,
    UserProfile,
)
from tgbroadcast.core.domain.recipients import DistinctIds, packed_ids
from tgbroadcast.core.rules.validation import (
    SendRequest,
    validate_send,
    validate_users,
)
from tgbroadcast.server.rest.users_csv import csv_chunks


def violations(raised: pytest.ExceptionInfo[InvalidArgument]) -> dict[str, str]:
    return {v.field: v.description for v in raised.value.violations}


def test_tags_are_checked_and_normalized() -> None:
    (user,) = validate_users(
        [UserProfile(id=1, tags=("VIP", "vip", "beta:2"), language_code="PT-BR")]
    )
    assert (user.tags, user.language_code) == (("beta:2", "vip"), "pt-br")
    with pytest.raises(InvalidArgument) as raised:
        validate_users(
            [
                UserProfile(id=1, tags=("has space",)),
                UserProfile(id=2, tags=("",)),
                UserProfile(id=3, tags=("x" * 65,)),
                UserProfile(id=4, tags=tuple(f"t{i}" for i in range(101))),
                UserProfile(id=5, tags=("ünï",)),
                UserProfile(id=6, tags=("\u212a",)),  # KELVIN SIGN: Unicode lower-cases it to k
            ]
        )
    found = violations(raised)
    assert found.keys() == {
        "users[0].tags[0]",
        "users[1].tags[0]",
        "users[2].tags[0]",
        "users[3].tags",
        "users[4].tags[0]",
        "users[5].tags[0]",
    }
    assert "65 characters" in found["users[2].tags[0]"]
    assert "at most 100" in found["users[3].tags"]


def test_a_language_code_is_one_a_filter_could_select() -> None:
    with pytest.raises(InvalidArgument) as raised:
        validate_users(
            [
                UserProfile(id=1, language_code="e n"),
                UserProfile(id=2, language_code="en\n"),
                UserProfile(id=3, language_code="pt-BR"),
                UserProfile(id=4, language_code="x" * 36),
            ]
        )
    assert violations(raised) == {
        "users[0].language_code": "is not a language code (1-35 letters, digits, - or _)",
        "users[1].language_code": "is not a language code (1-35 letters, digits, - or _)",
        "users[3].language_code": "is longer than 35 characters",
    }


@pytest.mark.parametrize(
    ("request_fields", "field"),
    [
        ({"user_ids": (1,), "all_users": True}, "all_users"),
        ({"user_ids": (1,), "filter": UserFilter()}, "filter"),
        ({"all_users": True, "filter": UserFilter()}, "filter"),
        ({"filter": UserFilter(tags=("bad tag",))}, "filter.tags[0]"),
        ({"filter": UserFilter(language_codes=("e n",))}, "filter.language_codes[0]"),
        ({"filter": UserFilter(language_codes=("\u212a",))}, "filter.language_codes[0]"),
    ],
)
def test_one_audience_and_a_valid_filter(request_fields: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidArgument) as raised:
        validate_send(SendRequest(message="hi", **request_fields), max_user_ids=10)  # type: ignore[arg-type]
    assert field in violations(raised)


def test_an_empty_filter_is_refused_every_user_is_all_users() -> None:
    """A filter built from a selection left empty (``{}``, ``{"tags": []}``) never reaches
    every user: that takes ``all_users``."""
    with pytest.raises(InvalidArgument) as raised:
        validate_send(SendRequest(message="hi", filter=UserFilter()), max_user_ids=10)
    assert list(violations(raised)) == ["filter"]
    assert "set all_users to true" in violations(raised)["filter"]
    tagged = validate_send(
        SendRequest(message="hi", filter=UserFilter(tags=("VIP",), language_codes=("EN",))),
        max_user_ids=10,
    )
    assert tagged.filter == UserFilter(tags=("vip",), language_codes=("en",))


def test_recipient_ids_are_held_as_64_bit_integers_without_repeats() -> None:
    given = [5, -1001, 5, 2**63 - 1, -(2**63), 7, -1001]
    for ids in (packed_ids(given), given):  # from a transport, or any sequence
        new = validate_send(SendRequest(message="hi", user_ids=ids), max_user_ids=10)
        assert isinstance(new.user_ids, DistinctIds)
        assert list(new.user_ids) == [5, -1001, 2**63 - 1, -(2**63), 7]  # request order
    assert isinstance(packed_ids(given), array)


def test_ids_beyond_64_bits_stay_as_given_and_are_each_named() -> None:
    too_big = packed_ids([1, 2**63, 0, -(2**63) - 1, 1])
    assert too_big == (1, 2**63, 0, -(2**63) - 1, 1)
    with pytest.raises(InvalidArgument) as raised:
        validate_send(SendRequest(message="hi", user_ids=too_big), max_user_ids=2)
    assert violations(raised) == {
        "user_ids[1]": f"{2**63} is not a Telegram chat id",
        "user_ids[2]": "0 is not a Telegram chat id",
        "user_ids[3]": f"{-(2**63) - 1} is not a Telegram chat id",
        "user_ids": "names 4 distinct recipients; at most 2 per request",
    }


async def lines_of(text: str) -> AsyncIterator[bytes]:
    for line in text.encode().splitlines(keepends=True):
        yield line


async def parse(text: str, chunk_size: int = 10_000) -> list[list[tuple[str, UserProfile]]]:
    chunks = []
    async for chunk in csv_chunks(lines_of(text), chunk_size=chunk_size):
        assert chunk.location is not None
        chunks.append([(chunk.location(i), user) for i, user in enumerate(chunk.users)])
    return chunks


async def test_csv_rows_become_chunks_of_users_named_by_line() -> None:
    text = (
        "\ufeffid,username,first_name,last_name,language_code,tags\r\n"
        '1,ann,"Ann, the first",Lee,en,vip beta\r\n'
        "\r\n"
        '2,,"Bo\r\nmultiline",,,\r\n'
        "3,,,,de,  spaced   tags \r\n"
    )
    chunks = await parse(text, chunk_size=2)
    # Two records per chunk; the blank line is a record of no user.
    assert [[location for location, _ in chunk] for chunk in chunks] == [
        ["line 2"],
        ["line 4", "line 6"],
    ]
    ((_, ann),) = chunks[0]
    (_, bo), (_, three) = chunks[1]
    assert ann == UserProfile(
        id=1,
        username="ann",
        first_name="Ann, the first",
        last_name="Lee",
        language_code="en",
        tags=("vip", "beta"),
    )
    assert bo == UserProfile(id=2, first_name="Bo\r\nmultiline", tags=())
    assert three.tags == ("spaced", "tags")
    # Columns in any order, some missing.
    (only,) = await parse("tags,id\nx,7\n")
    assert only == [("line 2", UserProfile(id=7, tags=("x",)))]


@pytest.mark.parametrize(
    ("text", "field", "words"),
    [
        ("", "body", "header"),
        ("id,nickname\n", "line 1", "unknown column 'nickname'"),
        ("username\nann\n", "line 1", "id column"),
        ("id,username\n1,ann\n2\n", "line 3", "has 1 fields"),
        ("id,username\n1,ann\nx1,bo\n", "line 3.id", "'x1' is not a whole number"),
        ('id,username\n1,"ann\n', "line 2", "not closed"),
        ('id,username\n1,"ab"c\n', "line 2", "not valid CSV"),
        ('id,username\n1,ab"c\n2,x"\n3,y\n', "line 2", "inside an unquoted field"),
    ],
)
async def test_bad_csv_names_the_line(text: str, field: str, words: str) -> None:
    with pytest.raises(InvalidArgument) as raised:
        await parse(text)
    assert words in violations(raised)[field]


@pytest.mark.parametrize(
    ("stray", "field", "words", "most_lines"),
    [
        ('1,O"Brien\n', "line 3", 'a quote (") inside an unquoted field', 3),
        ('1,"Brien\n', "line 3", "not closed within 100 lines or 64 KiB", 3 + 100),
        ('1,"' + "B" * 70_000 + "\n", "line 3", "not closed within 100 lines or 64 KiB", 3),
    ],
    ids=["quote inside a field", "quoted field never closed", "one huge open line"],
)
async def test_an_unbalanced_quote_stops_the_import_at_once(
    stray: str, field: str, words: str, most_lines: int
) -> None:
    """A stray quote must not make the parser buffer the rest of a big body: the import
    fails naming the record's first line, having read only up to the record's cap."""
    consumed = 0

    async def body() -> AsyncIterator[bytes]:
        nonlocal consumed
        for line in ("id,first_name\n", "7,Ann\n", stray):
            consumed += 1
            yield line.encode()
        for n in range(300_000):
            consumed += 1
            yield f"{n + 10},Name{n}\n".encode()

    with pytest.raises(InvalidArgument) as raised:
        async for _ in csv_chunks(body()):
            pass
    assert words in violations(raised)[field]
    assert "unbalanced quote" in violations(raised)[field]
    assert consumed <= most_lines
