"""Upgrading from any earlier revision keeps every row, on SQLite, PostgreSQL and MariaDB.

A database is built at an old revision (0001, the first; 0003, the last with the foreign key
from ``deliveries`` to ``broadcasts``; 0005, the first with ``broadcast_actions``) holding
users, broadcasts, their deliveries and, where the schema has them, tags and actions; the
store's own ``migrate()`` brings it to the newest revision, and every row is still there.

On SQLite, revisions rebuild ``broadcasts`` (copy, drop, rename): with foreign keys on, the
drop would delete every delivery and action through ``ON DELETE CASCADE``. ``migrate()``
turns them off for the migration, checks them (``PRAGMA foreign_key_check``) before it
commits, and turns them back on before the connection goes back to the pool.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.script import ScriptDirectory
from sqlalchemy import (
    func,
    select,
    text,
)
from sqlalchemy.engine import make_url

from tests.fixtures.databases import temporary_database
from tests.fixtures.old_schema import (
    assert_database_warned_nothing,
    old_actions,
    old_broadcasts,
    old_deliveries,
    old_tags,
    old_users,
    run_migration,
)
from tgbroadcast.core.domain.access import DEFAULT_BOT
from tgbroadcast.core.domain.model import BroadcastStatus, ControlAction, DeliveryState
from tgbroadcast.core.store import Store, create_engine
from tgbroadcast.core.store.engine import alembic_config, migrate

HEAD = ScriptDirectory.from_config(alembic_config()).get_current_head()
AT = datetime(2026, 11, 30, 12, 0, 0, 123456, tzinfo=UTC)
USERS = (1, 2, 3, -1_001_234_567_890, 2**40)


@pytest.fixture(autouse=True)
def database_warned_nothing(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    yield
    assert_database_warned_nothing(caplog)


async def build_at(url: str, revision: str) -> dict[str, int]:
    """A database at ``revision`` with users, two broadcasts and their deliveries; their ids.

    From 0004 on the users have tags, from 0005 on the running broadcast has actions."""
    await run_migration(url, command.upgrade, revision)  # an empty database: nothing to lose
    engine = create_engine(url)
    try:
        async with engine.begin() as connection:
            await connection.execute(
                old_users.insert(),
                [
                    {"id": user, "username": f"u{user}", "first_name": None, "active": True}
                    | {"created_at": AT, "updated_at": AT}
                    for user in USERS
                ],
            )
            if revision >= "0004":
                await connection.execute(
                    old_tags.insert(), [{"user_id": 1, "tag": "vip"}, {"user_id": 2, "tag": "vip"}]
                )
            common = {"message": "hello", "media_type": "text", "all_users": False}
            ids: dict[str, int] = {}
            for name, values in (
                ("finished", {"status": "completed", "sent": 4, "failed": 1, "finished_at": AT}),
                ("running", {"status": "running", "sent": 1, "failed": 0, "finished_at": None}),
            ):
                inserted = await connection.execute(
                    old_broadcasts.insert().values(
                        **common, **values, total=len(USERS), dispatched=True, created_at=AT
                    )
                )
                assert inserted.inserted_primary_key is not None
                ids[name] = int(inserted.inserted_primary_key[0])
            sent: dict[str, Any] = {"state": "sent", "error": None, "finished_at": AT}
            pending: dict[str, Any] = {"state": "pending", "message_id": None, "error": None}
            rows: list[dict[str, Any]] = [
                {"broadcast_id": ids["finished"], "user_id": user, "message_id": 10 + n} | sent
                for n, user in enumerate(USERS[:-1])
            ]
            rows.append(
                {"broadcast_id": ids["finished"], "user_id": USERS[-1], "state": "failed"}
                | {"message_id": None, "error": "Bad Request", "finished_at": AT}
            )
            rows.append({"broadcast_id": ids["running"], "user_id": 1, "message_id": 20} | sent)
            rows.extend(
                {"broadcast_id": ids["running"], "user_id": user, "finished_at": None} | pending
                for user in USERS[1:]
            )
            await connection.execute(old_deliveries.insert(), rows)
            if revision >= "0005":
                await connection.execute(
                    old_actions.insert(),
                    [
                        {"broadcast_id": ids["running"], "action": "pause", "actor": "bob"}
                        | {"at": AT},
                        {"broadcast_id": ids["running"], "action": "resume", "actor": "bob"}
                        | {"at": AT},
                    ],
                )
    finally:
        await engine.dispose()
    return ids


async def counts(url: str) -> dict[str, int]:
    """Rows per table, and the schema's revision's (1 when at the newest)."""
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            found = {
                table.name: await connection.scalar(select(func.count()).select_from(table))
                for table in (old_users, old_broadcasts, old_deliveries)
            }
            revision = await connection.scalar(text("SELECT version_num FROM alembic_version"))
            return {name: int(count or 0) for name, count in found.items()} | {
                "at_head": int(revision == HEAD)
            }
    finally:
        await engine.dispose()


@pytest.mark.parametrize("revision", ["0001", "0003", "0005"])
async def test_an_upgrade_from_an_old_revision_keeps_every_row(
    database_url: str, revision: str
) -> None:
    ids = await build_at(database_url, revision)
    async with Store.open(database_url) as store:
        await store.migrate()
        assert await counts(database_url) == {
            "users": len(USERS),
            "broadcasts": 2,
            "deliveries": 2 * len(USERS),
            "at_head": 1,
        }

        finished = await store.get_broadcast(ids["finished"])
        assert (finished.status, finished.sent, finished.failed, finished.bot) == (
            BroadcastStatus.COMPLETED,
            4,
            1,
            DEFAULT_BOT,
        )
        report = await store.delivery_report(ids["finished"], after_user_id=None, limit=10)
        assert [(d.user_id, d.state, d.message_id) for d in report] == [
            (USERS[3], DeliveryState.SENT, 13),
            (1, DeliveryState.SENT, 10),
            (2, DeliveryState.SENT, 11),
            (3, DeliveryState.SENT, 12),
            (USERS[4], DeliveryState.FAILED, None),
        ]
        running = await store.get_broadcast(ids["running"], actions=True)
        assert (running.status, running.pending) == (BroadcastStatus.RUNNING, len(USERS) - 1)
        assert [(a.action, a.actor) for a in running.actions] == (
            [(ControlAction.PAUSE, "bob"), (ControlAction.RESUME, "bob")]
            if revision >= "0005"
            else []
        )
        assert await store.pending_among(ids["running"], list(USERS)) == set(USERS[1:])
        assert (await store.get_user(1)).tags == (("vip",) if revision >= "0004" else ())


def sqlite_file(url: str) -> Path:
    return Path(make_url(url).database or "")


async def test_sqlite_connections_keep_foreign_keys_on_after_a_migration(
    tmp_path: Path,
) -> None:
    """The migration's connection goes back to the pool with foreign keys on again."""
    async with temporary_database("sqlite", tmp_path) as url:
        await build_at(url, "0003")
        engine = create_engine(url)
        try:
            await migrate(engine)
            # The pool holds the one connection the migration used: the next user gets it.
            assert engine.pool.checkedin() == 1  # type: ignore[attr-defined]
            async with engine.connect() as connection:
                assert await connection.scalar(text("PRAGMA foreign_keys")) == 1
        finally:
            await engine.dispose()
        assert (await counts(url))["deliveries"] == 2 * len(USERS)


async def test_sqlite_refuses_a_migration_that_leaves_broken_references(
    tmp_path: Path,
) -> None:
    """An action whose broadcast is gone (written with foreign keys off, around the store)
    fails the migration, which commits nothing: the schema stays at its revision."""
    async with temporary_database("sqlite", tmp_path) as url:
        await build_at(url, "0005")
        with sqlite3.connect(sqlite_file(url)) as raw:
            raw.execute("PRAGMA foreign_keys = OFF")
            raw.execute(
                "INSERT INTO broadcast_actions (broadcast_id, action, actor, at) "
                "VALUES (999, 'cancel', 'eve', '2026-11-30 12:00:00')"
            )
        raw.close()
        async with Store.open(url) as store:
            with pytest.raises(RuntimeError, match="1 in broadcast_actions -> broadcasts"):
                await store.migrate()
        with sqlite3.connect(sqlite_file(url)) as raw:
            assert raw.execute("SELECT version_num FROM alembic_version").fetchall() == [("0005",)]
            assert raw.execute("SELECT COUNT(*) FROM deliveries").fetchall() == [(2 * len(USERS),)]
        raw.close()
