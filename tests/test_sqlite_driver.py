"""The SQLite engine's cursor (``core/store/sqlite_driver.py``): what SQLAlchemy reads from a
statement — rows, ``rowcount``, ``lastrowid``, errors — as aiosqlite's own cursor gives it,
each statement one call on the connection's thread."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError, OperationalError

from tgbroadcast.core.store.engine import create_engine


async def test_rows_counts_ids_and_errors_come_back_as_sqlalchemy_reads_them(
    tmp_path: Path,
) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'driver.db'}")
    try:
        async with engine.begin() as connection:
            raw = await connection.get_raw_connection()
            assert type(raw.dbapi_connection).__module__.endswith("sqlite_driver")
            await connection.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)"))
            inserted = await connection.execute(text("INSERT INTO t (v) VALUES ('a')"))
            assert inserted.lastrowid == 1
            many = await connection.execute(
                text("INSERT INTO t (v) VALUES (:v)"), [{"v": "b"}, {"v": "c"}, {"v": "d"}]
            )
            assert many.rowcount == 3
            updated = await connection.execute(text("UPDATE t SET v = 'x' WHERE id > 2"))
            assert updated.rowcount == 2
            rows = await connection.execute(text("SELECT id, v FROM t ORDER BY id"))
            assert list(rows.keys()) == ["id", "v"]
            assert [tuple(row) for row in rows] == [(1, "a"), (2, "b"), (3, "x"), (4, "x")]
            returned = await connection.execute(
                text("INSERT INTO t (v) VALUES ('e') RETURNING id, v")
            )
            assert [tuple(row) for row in returned] == [(5, "e")]
            with pytest.raises(IntegrityError):
                await connection.execute(text("INSERT INTO t (id, v) VALUES (1, 'again')"))
        async with engine.connect() as connection:
            with pytest.raises(OperationalError, match="no such table"):
                await connection.execute(text("SELECT * FROM missing"))
            streamed = await connection.stream(text("SELECT v FROM t ORDER BY id"))
            assert [row.v async for row in streamed] == ["a", "b", "x", "x", "e"]
    finally:
        await engine.dispose()
