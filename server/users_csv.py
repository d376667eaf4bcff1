"""Users as CSV, read as a stream: the body of ``POST /v1/users/import``.

The first line is a header naming the columns, in any order: ``id`` (required),
``username``, ``first_name``, ``last_name``, ``language_code``, ``tags`` (tags separated by
spaces). A missing column is empty for every row. Empty fields leave the stored value as it
is, except ``tags``: each row replaces the user's tags (an empty field: no tags), as
UpsertUsers does. Blank lines are skipped. Fields may be quoted as in RFC 4180 (a quoted
field may span lines); the text is UTF-8, with or without a byte order mark.

The body is read line by line and handed on in chunks of at most
:data:`~broadcasting.validation.MAX_USERS_PER_UPSERT` rows, so memory holds one chunk
whatever the body's size. Errors name the line (``line 17.id``), counting the header as
line 1.
"""

from __future__ import annotations

import csv
from collections.abc import AsyncIterable, AsyncIterator, Iterator
from typing import Final

from broadcasting.errors import FieldViolation, InvalidArgument
from broadcasting.model import UserProfile
from broadcasting.user_import import ImportChunk
from broadcasting.validation import MAX_USERS_PER_UPSERT

COLUMNS: Final = ("id", "username", "first_name", "last_name", "language_code", "tags")
"""The columns a CSV import may have; the header row of the documented format."""

_BOM: Final = "\ufeff"


async def csv_chunks(
    lines: AsyncIterable[bytes], *, chunk_size: int = MAX_USERS_PER_UPSERT
) -> AsyncIterator[ImportChunk]:
    """The users of a CSV body given as raw lines, ``chunk_size`` rows per chunk; each chunk
    names its users by line number. :class:`InvalidArgument` naming the line for a header,
    a row or bytes that cannot be read."""
    header: dict[str, int] | None = None
    pending: list[str] = []  # complete records' lines, parsed ``chunk_size`` records at once
    starts: list[int] = []  # the line each pending record starts on
    quotes = 0  # quote characters in the record being read: odd while a quoted field is open
    line_number = 0
    async for raw in lines:
        line_number += 1
        text = _decode(raw, line_number)
        if quotes % 2 == 0:  # a new record starts here
            if line_number == 1:
                text = text.removeprefix(_BOM)
            starts.append(line_number)
        pending.append(text)
        quotes += text.count('"')
        if quotes % 2:  # inside a quoted field: the record goes on on the next line
            continue
        quotes = 0
        if header is None:
            ((_, names),) = _records(pending, starts)
            header = _header(names)
            pending, starts = [], []
        elif len(starts) >= chunk_size:
            users, numbers = _rows(pending, starts, header)
            pending, starts = [], []
            if users:
                yield _chunk(users, numbers)
    if quotes % 2:
        raise InvalidArgument.single(
            f"line {starts[-1]}", "a quoted field is not closed before the end of the body"
        )
    if header is None:
        raise InvalidArgument.single(
            "body", f"is empty; the first line must be a header such as {','.join(COLUMNS)}"
        )
    users, numbers = _rows(pending, starts, header)
    if users:
        yield _chunk(users, numbers)


def _rows(
    lines: list[str], starts: list[int], header: dict[str, int]
) -> tuple[list[UserProfile], list[int]]:
    """The users of complete records (one per entry of ``starts``), blank ones skipped."""
    users: list[UserProfile] = []
    numbers: list[int] = []
    for line_number, row in _records(lines, starts):
        if any(field.strip() for field in row):
            users.append(_user(row, header, line_number))
            numbers.append(line_number)
    return users, numbers


def _records(lines: list[str], starts: list[int]) -> Iterator[tuple[int, list[str]]]:
    """Each record's first line number and fields. The records were cut by counting quotes;
    the CSV reader must end each one on the same line, or a quote sat in an unquoted field
    (which would shift every later row): that is refused, naming the line."""
    if not starts:
        return
    reader = csv.reader(lines, strict=True)
    first = starts[0]
    for index, line_number in enumerate(starts):
        try:
            row = next(reader, [])
        except csv.Error as exc:
            raise InvalidArgument.single(
                f"line {line_number}", f"is not valid CSV: {exc}"
            ) from None
        end = starts[index + 1] if index + 1 < len(starts) else first + len(lines)
        if reader.line_num != end - first:
            raise InvalidArgument.single(
                f"line {line_number}",
                'has a quote (") inside an unquoted field; quote the whole field and double '
                "the quotes inside it",
            )
        yield line_number, row


def _chunk(users: list[UserProfile], numbers: list[int]) -> ImportChunk:
    return ImportChunk(users, lambda index: f"line {numbers[index]}")


def _decode(raw: bytes, line_number: int) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidArgument.single(f"line {line_number}", "is not UTF-8 text") from None


def _header(row: list[str]) -> dict[str, int]:
    names = [name.strip().lower() for name in row]
    violations: list[FieldViolation] = []
    for name in names:
        if name not in COLUMNS:
            violations.append(
                FieldViolation(
                    "line 1", f"unknown column {name!r}; the columns are {','.join(COLUMNS)}"
                )
            )
        elif names.count(name) > 1:
            violations.append(FieldViolation("line 1", f"column {name!r} is given twice"))
    if "id" not in names:
        violations.append(
            FieldViolation("line 1", f"the header must name an id column ({','.join(COLUMNS)})")
        )
    if violations:
        raise InvalidArgument(dict.fromkeys(violations))
    return {name: index for index, name in enumerate(names)}


def _user(row: list[str], header: dict[str, int], line_number: int) -> UserProfile:
    if len(row) != len(header):
        raise InvalidArgument.single(
            f"line {line_number}", f"has {len(row)} fields; the header has {len(header)}"
        )
    raw_id = row[header["id"]].strip()
    try:
        user_id = int(raw_id)
    except ValueError:
        shown = raw_id if len(raw_id) <= 30 else raw_id[:30] + "..."
        raise InvalidArgument.single(
            f"line {line_number}.id", f"{shown!r} is not a whole number"
        ) from None

    def field(name: str) -> str | None:
        return row[header[name]] or None if name in header else None

    return UserProfile(
        id=user_id,
        username=field("username"),
        first_name=field("first_name"),
        last_name=field("last_name"),
        language_code=field("language_code"),
        tags=tuple((field("tags") or "").split()),
    )
