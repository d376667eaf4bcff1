"""SQLite through aiosqlite with one hand-off to its thread per statement.

SQLAlchemy's aiosqlite adapter runs a statement as aiosqlite's calls: open a cursor, execute,
fetch the rows, close the cursor — each a hand-off to the connection's thread and a wake-up of
the event loop when it is done. The cursor here runs the four as one function on that thread
(:func:`_run`) and keeps what SQLAlchemy reads afterwards (the rows, ``description``,
``rowcount``, ``lastrowid``). Everything else — the dialect, the connection, server-side
cursors, error translation, the execution mutex — is SQLAlchemy's own.

The engine gets it as its DBAPI module (``create_async_engine(url, module=dbapi())``), so the
URL stays ``sqlite+aiosqlite``. It relies on aiosqlite's ``Connection._execute`` (run a function
on the connection's thread) and ``_conn`` (the ``sqlite3`` connection), as SQLAlchemy's
adapter relies on its ``_tx`` queue: ``tests/test_sqlite_driver.py`` checks what SQLAlchemy
reads through it, and every SQLite test of the store runs on it.
"""

from __future__ import annotations

import sqlite3
from collections import deque
from threading import Thread
from typing import Any

import aiosqlite
from sqlalchemy.dialects.sqlite.aiosqlite import (
    AsyncAdapt_aiosqlite_connection,
    AsyncAdapt_aiosqlite_cursor,
    AsyncAdapt_aiosqlite_dbapi,
)
from sqlalchemy.util import await_

_Ran = tuple[Any, int, int | None, list[Any]]
"""What a statement left: its ``description``, ``rowcount``, ``lastrowid`` and rows."""


def _run(connection: sqlite3.Connection, operation: str, parameters: Any, many: bool) -> _Ran:
    """On the connection's thread: the statement, its rows, its cursor closed."""
    cursor = connection.cursor()
    try:
        if many:
            cursor.executemany(operation, parameters)
        elif parameters is None:
            cursor.execute(operation)
        else:
            cursor.execute(operation, parameters)
        description = cursor.description
        rows = cursor.fetchall() if description and not many else []  # as SQLAlchemy's
        return description, cursor.rowcount, cursor.lastrowid, rows
    finally:
        cursor.close()


class _Cursor(AsyncAdapt_aiosqlite_cursor):
    """SQLAlchemy's cursor for aiosqlite, each statement in one call on the thread."""

    __slots__ = ("_description", "_lastrowid", "_rowcount")

    def __init__(self, adapt_connection: Any) -> None:  # no aiosqlite cursor of its own
        self._adapt_connection = adapt_connection
        self._connection = adapt_connection._connection
        self._cursor = None  # type: ignore[assignment]
        self._soft_closed_memoized = {}  # type: ignore[assignment]
        self._rows = deque()
        self._description: Any = None
        self._rowcount = -1
        self._lastrowid: int | None = None

    @property
    def description(self) -> Any:
        return self._description

    @property
    def rowcount(self) -> int:
        return self._rowcount

    @property
    def lastrowid(self) -> int:
        return self._lastrowid  # type: ignore[return-value]

    def close(self) -> None:
        self._rows.clear()

    async def _async_soft_close(self) -> None:
        return None  # closed on the thread already

    async def _execute_async(self, operation: Any, parameters: Any) -> Any:
        return await self._call(operation, parameters, many=False)

    async def _executemany_async(self, operation: Any, seq_of_parameters: Any) -> Any:
        return await self._call(operation, seq_of_parameters, many=True)

    async def _call(self, operation: str, parameters: Any, *, many: bool) -> None:
        connection: Any = self._connection  # aiosqlite's: its _execute is untyped
        async with self._adapt_connection._execute_mutex:
            ran: _Ran = await connection._execute(
                _run, connection._conn, operation, parameters, many
            )
        self._description, self._rowcount, self._lastrowid, rows = ran
        self._rows = deque(rows)


class _Connection(AsyncAdapt_aiosqlite_connection):
    __slots__ = ()
    _cursor_cls = _Cursor


class _DBAPI(AsyncAdapt_aiosqlite_dbapi):
    def connect(self, *arg: Any, **kw: Any) -> AsyncAdapt_aiosqlite_connection:
        """SQLAlchemy's ``connect``, with this module's connection (and so its cursor)."""
        creator = kw.pop("async_creator_fn", None)
        if creator is not None:
            connection = creator(*arg, **kw)
        else:
            connection = self.aiosqlite.connect(*arg, **kw)
            thread = connection if isinstance(connection, Thread) else connection._thread
            thread.daemon = True  # as SQLAlchemy's: a thread never keeps the process alive
        return _Connection(self, await_(connection))


def dbapi() -> Any:
    """The DBAPI module for ``create_async_engine(..., module=)``."""
    return _DBAPI(aiosqlite, sqlite3)
