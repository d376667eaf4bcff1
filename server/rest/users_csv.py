"""Users as CSV, read as a stream: the body of ``POST /v1/users/import``.

The first line is a header naming the columns, in any order: ``id`` (required),
``username``, ``first_name``, ``last_name``, ``language_code``, ``tags`` (tags separated by
spaces). A missing column is empty for every row. Empty fields leave the stored value as it
is, except ``tags``: each row replaces the user's tags (an empty field: no tags), as
UpsertUsers does. Blank lines are skipped. Fields may be quoted as in RFC 4180 (a quoted
field may span lines); the text is UTF-8, with or without a byte order mark.

The body is read line by line and handed on in chunks of at most
:data:`~tgbroadcast.core.rules.validation.MAX_USERS_PER_UPSERT` rows, so memory holds one chunk
whatever the body's size. Errors name the line (``line 17.id``), counting the header as
line 1.
"""

from __future__ import annotations

import csv
from collections.abc import AsyncIterable, AsyncIterator, Iterator
from typing import Final

from tgbroadcast.core.domain.errors import FieldViolation, InvalidArgument
from tgbroadcast.core.domain.model import UserProfile
from tgbroadcast.core.rules.validation import MAX_USERS_PER_UPSERT
from tgbroadcast.core.service.user_import import ImportChunk
from tgbroadcast.server.rest.params import CANONICAL_INTEGER

COLUMNS: Final = ("id", "username", "first_name", "last_name", "language_code", "tags")
"""The columns a CSV import may have; the header row of the documented format."""

_BOM: Final = "\ufeff"


MAX_RECORD_LINES: Final = 100
"""Physical lines one record (a row with quoted line breaks) may span."""
MAX_RECORD_CHARS: Final = 64 * 1024
"""Characters one record may hold: a quote left open cannot make the parser buffer the rest
of the body."""

# Where a record's reading stands at the end of a line (see _Quotes).
_FIELD_START: Final = 0
_UNQUOTED: Final = 1
_QUOTED: Final = 2
_CLOSED: Final = 3  # a quote that may end the quoted field, or be the first of ""


async def csv_chunks(
    lines: AsyncIterable[bytes], *, chunk_size: int = MAX_USERS_PER_UPSERT
) -> AsyncIterator[ImportChunk]:
    """The users of a CSV body given as raw lines, ``chunk_size`` rows per chunk; each chunk
    names its users by line number. :class:`InvalidArgument` naming the line for a header,
    a row or bytes that cannot be read.

    A quote (``"``) is read as RFC 4180 says: it opens a quoted field only at the start of a
    field, so ``1,O"Brien`` is refused at its line at once; a quoted field left open is
    refused, naming the line it opened on, once its record passes
    :data:`MAX_RECORD_LINES` lines or :data:`MAX_RECORD_CHARS` characters — the body is not
    read further.
    """
    header: dict[str, int] | None = None
    pending: list[str] = []  # complete records' lines, parsed ``chunk_size`` records at once
    starts: list[int] = []  # the line each pending record starts on
    state = _FIELD_START  # where the record being read stands; _QUOTED: it goes on
    record_lines = record_chars = 0
    line_number = 0
    async for raw in lines:
        line_number += 1
        text = _decode(raw, line_number)
        if state != _QUOTED:  # a new record starts here
            if line_number == 1:
                text = text.removeprefix(_BOM)
            starts.append(line_number)
            state = _FIELD_START
            record_lines = record_chars = 0
        pending.append(text)
        record_lines += 1
        record_chars += len(text)
        state = _scan(text, state, starts[-1])
        if state == _QUOTED:  # inside a quoted field: the record goes on on the next line
            if record_lines >= MAX_RECORD_LINES or record_chars >= MAX_RECORD_CHARS:
                raise InvalidArgument.single(
                    f"line {starts[-1]}",
                    f"unbalanced quote: the quoted field opened on this line is not closed "
                    f"within {MAX_RECORD_LINES} lines or {MAX_RECORD_CHARS // 1024} KiB",
                )
            continue
        if header is None:
            ((_, names),) = _records(pending, starts)
            header = _header(names)
            pending, starts = [], []
        elif len(starts) >= chunk_size:
            users, numbers = _rows(pending, starts, header)
            pending, starts = [], []
            if users:
                yield _chunk(users, numbers)
    if state == _QUOTED:
        raise InvalidArgument.single(
            f"line {starts[-1]}",
            "unbalanced quote: a quoted field is not closed before the end of the body",
        )
    if header is None:
        raise InvalidArgument.single(
            "body", f"is empty; the first line must be a header such as {','.join(COLUMNS)}"
        )
    users, numbers = _rows(pending, starts, header)
    if users:
        yield _chunk(users, numbers)


def _scan(text: str, state: int, record_start: int) -> int:
    """Where the record stands after ``text``, one of its physical lines, read from
    ``state``. Refuses a quote inside an unquoted field (RFC 4180 allows none there; taking
    it as an opening quote would swallow the lines after it)."""
    if '"' not in text:  # the common line: nothing changes but where a field stands
        if state == _QUOTED:
            return _QUOTED
        return _FIELD_START if text.endswith(("\n", "\r", ",")) or not text else _UNQUOTED
    for ch in text:
        if state == _QUOTED:
            if ch == '"':
                state = _CLOSED
        elif ch == '"':
            if state == _FIELD_START:
                state = _QUOTED
            elif state == _CLOSED:
                state = _QUOTED  # "" inside a quoted field
            else:
                raise InvalidArgument.single(
                    f"line {record_start}",
                    'unbalanced quote: a quote (") inside an unquoted field; quote the whole '
                    "field and double the quotes inside it",
                )
        elif ch in ",\r\n":
            state = _FIELD_START
        else:
            state = _UNQUOTED  # after a closing quote: the CSV reader names the error
    return state


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
    # Written as a number in a path is (ASCII digits; not ``+1``, ``1_0``, ``01``, full-width),
    # and at most 20 characters: int() refuses more than 4,300 digits with a ValueError.
    if not CANONICAL_INTEGER.fullmatch(raw_id) or len(raw_id) > 20:
        shown = raw_id if len(raw_id) <= 30 else raw_id[:30] + "..."
        raise InvalidArgument.single(f"line {line_number}.id", f"{shown!r} is not a whole number")
    user_id = int(raw_id)

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
