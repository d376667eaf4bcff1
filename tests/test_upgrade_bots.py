"""Upgrading to bots loses nothing (issue #13, item 8), on SQLite, PostgreSQL and MariaDB.

A database is built at revision 0005 (the schema before bots) with users, tags and three
broadcasts — one finished, one running with pending recipients and a recorded resume, one
with an idempotency key — then the store's own ``migrate()`` brings it to the newest
revision. Everything is still there, belongs to the bot ``default`` and keeps working; a
second bot can then have a user with an id the default bot has too.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from alembic import command
from alembic.script import ScriptDirectory
from sqlalchemy import (
    func,
    select,
    text,
)

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
from tgbroadcast.core.domain.errors import AlreadyExists
from tgbroadcast.core.domain.model import (
    BroadcastStatus,
    Content,
    ControlAction,
    DeliveryResult,
    DeliveryState,
    NewBroadcast,
    UserFilter,
    UserProfile,
)
from tgbroadcast.core.store import Store, create_engine
from tgbroadcast.core.store.engine import alembic_config

BEFORE_BOTS = "0005"
HEAD = ScriptDirectory.from_config(alembic_config()).get_current_head()
AT = datetime(2026, 11, 30, 12, 0, 0, 123456, tzinfo=UTC)
KEY = "order-42"
HASH = "h" * 64
GROUP = -1_001_234_567_890
BIG = 2**40


@pytest.fixture(autouse=True)
def database_warned_nothing(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    yield
    assert_database_warned_nothing(caplog)


async def build_before_bots(url: str) -> dict[str, int]:
    """A database at revision 0005 holding users, tags and three broadcasts; their ids."""
    await run_migration(url, command.upgrade, BEFORE_BOTS)
    engine = create_engine(url)
    profile = {"created_at": AT, "updated_at": AT, "blocked_reason": None, "blocked_at": None}
    try:
        async with engine.begin() as connection:
            await connection.execute(
                old_users.insert(),
                [
                    {"id": 1, "username": "one", "first_name": "Ann", "language_code": "en"}
                    | profile
                    | {"active": True},
                    {"id": 2, "username": None, "first_name": "Bo", "language_code": "de"}
                    | profile
                    | {"active": True},
                    {"id": 3, "username": None, "first_name": None, "language_code": "en"}
                    | profile
                    | {"active": False, "blocked_reason": "blocked", "blocked_at": AT},
                    {"id": 4, "username": None, "first_name": None, "language_code": None}
                    | profile
                    | {"active": True},
                    {"id": GROUP, "username": None, "first_name": None, "language_code": None}
                    | profile
                    | {"active": True},
                    {"id": BIG, "username": None, "first_name": None, "language_code": None}
                    | profile
                    | {"active": True},
                ],
            )
            await connection.execute(
                old_tags.insert(),
                [
                    {"user_id": 1, "tag": "vip"},
                    {"user_id": 1, "tag": "beta"},
                    {"user_id": 2, "tag": "vip"},
                    {"user_id": 3, "tag": "vip"},
                ],
            )
            common = {
                "message": "hello",
                "media_type": "text",
                "all_users": False,
                "created_at": AT,
                "resumed_at": None,
                "idempotency_key": None,
                "request_hash": None,
                "created_by": "alice",
            }
            ids: dict[str, int] = {}
            for name, values in (
                (
                    "finished",
                    {"status": "completed", "total": 2, "sent": 1, "failed": 1}
                    | {"dispatched": True, "started_at": AT, "finished_at": AT},
                ),
                (
                    "running",
                    {"status": "running", "total": 3, "sent": 1, "failed": 0}
                    | {"dispatched": True, "started_at": AT, "finished_at": None}
                    | {"resumed_at": AT},
                ),
                (
                    "keyed",
                    {"status": "completed", "total": 1, "sent": 1, "failed": 0}
                    | {"dispatched": True, "started_at": AT, "finished_at": AT}
                    | {"idempotency_key": KEY, "request_hash": HASH},
                ),
            ):
                inserted = await connection.execute(
                    old_broadcasts.insert().values(**(common | values))
                )
                assert inserted.inserted_primary_key is not None
                ids[name] = int(inserted.inserted_primary_key[0])
            sent = {"state": "sent", "message_id": 11, "error": None, "finished_at": AT}
            pending = {"state": "pending", "message_id": None, "error": None, "finished_at": None}
            blocked = {"state": "blocked", "message_id": None, "error": "Forbidden"}
            await connection.execute(
                old_deliveries.insert(),
                [
                    {"broadcast_id": ids["finished"], "user_id": 1} | sent,
                    {"broadcast_id": ids["finished"], "user_id": 3} | blocked | {"finished_at": AT},
                    {"broadcast_id": ids["running"], "user_id": 1} | sent,
                    {"broadcast_id": ids["running"], "user_id": 2} | pending,
                    {"broadcast_id": ids["running"], "user_id": GROUP} | pending,
                    {"broadcast_id": ids["keyed"], "user_id": BIG} | sent,
                ],
            )
            await connection.execute(
                old_actions.insert(),
                [
                    {"broadcast_id": ids["running"], "action": "pause", "actor": "bob", "at": AT},
                    {"broadcast_id": ids["running"], "action": "resume", "actor": "bob", "at": AT},
                ],
            )
    finally:
        await engine.dispose()
    return ids


async def revision_and_bots(url: str) -> tuple[str | None, set[str]]:
    """The schema's revision, and every bot named in users, tags and broadcasts."""
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            revision = await connection.scalar(text("SELECT version_num FROM alembic_version"))
            bots: set[str] = set()
            for table in ("users", "user_tags", "broadcasts"):
                found = await connection.execute(text(f"SELECT DISTINCT bot FROM {table}"))
                bots.update(row[0] for row in found)
            return revision, bots
    finally:
        await engine.dispose()


async def test_an_upgrade_keeps_everything_as_the_default_bots(database_url: str) -> None:
    ids = await build_before_bots(database_url)
    async with Store.open(database_url) as store:
        await store.migrate()
        assert await revision_and_bots(database_url) == (HEAD, {DEFAULT_BOT})

        # Users: every one, with its profile, tags and blocked state.
        page = await store.list_users(after=None, limit=100)
        assert [u.id for u in page.users] == [GROUP, 1, 2, 3, 4, BIG]
        one = await store.get_user(1)
        assert (one.username, one.first_name, one.tags, one.created_at) == (
            "one",
            "Ann",
            ("beta", "vip"),
            AT,
        )
        three = await store.get_user(3)
        assert (three.active, three.blocked_reason, three.blocked_at) == (False, "blocked", AT)
        assert await store.audience_size(UserFilter(tags=("vip",))) == 2  # 3 is blocked

        # Broadcasts: intact, the default bot's, with their actions.
        finished = await store.get_broadcast(ids["finished"])
        assert (finished.status, finished.sent, finished.failed, finished.bot) == (
            BroadcastStatus.COMPLETED,
            1,
            1,
            DEFAULT_BOT,
        )
        assert finished.created_by == "alice"
        report = await store.delivery_report(ids["finished"], after_user_id=None, limit=10)
        assert [(d.user_id, d.state, d.message_id) for d in report] == [
            (1, DeliveryState.SENT, 11),
            (3, DeliveryState.BLOCKED, None),
        ]
        running = await store.get_broadcast(ids["running"], actions=True)
        assert (running.status, running.pending, running.bot) == (
            BroadcastStatus.RUNNING,
            2,
            DEFAULT_BOT,
        )
        assert [(a.action, a.actor) for a in running.actions] == [
            (ControlAction.PAUSE, "bob"),
            (ControlAction.RESUME, "bob"),
        ]
        listed = await store.list_broadcasts(statuses=(), before=None, limit=10, bots=[DEFAULT_BOT])
        assert [b.id for b in listed] == sorted(ids.values(), reverse=True)

        # The running broadcast goes on: its pending recipients are found, claimed and
        # recorded, and a blocked one deactivates the default bot's user.
        batches = [batch async for batch in store.job_batches(ids["running"], batch_size=10)]
        assert batches == [(GROUP, 1, 2)]
        assert await store.pending_among(ids["running"], [GROUP, 1, 2]) == {GROUP, 2}
        claimed = await store.claim_recipients(
            ids["running"], [GROUP, 2], token="upgrade-test", lease_seconds=60
        )
        assert claimed.held == {GROUP, 2}
        recorded = await store.record_results(
            [
                DeliveryResult(
                    broadcast_id=ids["running"],
                    user_id=2,
                    state=DeliveryState.BLOCKED,
                    finished_at=AT,
                    error="Forbidden: bot was blocked by the user",
                ),
                DeliveryResult(
                    broadcast_id=ids["running"],
                    user_id=GROUP,
                    state=DeliveryState.SENT,
                    finished_at=AT,
                    message_id=12,
                ),
            ]
        )
        assert [b.id for b in recorded.finished] == [ids["running"]]
        assert (await store.get_user(2)).blocked_reason == "blocked"

        # The idempotency key still answers under the default bot, and only there.
        found = await store.broadcast_by_idempotency_key(KEY)
        assert found is not None
        assert (found[0].id, found[1]) == (ids["keyed"], HASH)
        with pytest.raises(AlreadyExists):
            await store.create_broadcast(
                NewBroadcast(content=Content(message="again"), user_ids=(1,), idempotency_key=KEY)
            )
        assert await store.broadcast_by_idempotency_key(KEY, bot="other") is None
        elsewhere = await store.create_broadcast(
            NewBroadcast(
                content=Content(message="other"), user_ids=(1,), idempotency_key=KEY, bot="other"
            )
        )
        assert elsewhere.id > max(ids.values())  # ids stay unique across bots

        # A second bot has its own user 1, next to the default bot's.
        await store.upsert_users(
            [UserProfile(id=1, first_name="Other Ann", tags=("x",))], bot="other"
        )
        assert (await store.get_user(1, bot="other")).tags == ("x",)
        assert (await store.get_user(1)).first_name == "Ann"
        everyone = await store.create_broadcast(
            NewBroadcast(content=Content(message="all"), all_users=True)
        )
        assert everyone.total == 4  # GROUP, 1, 4, BIG: 2 and 3 are blocked


async def test_the_downgrade_refuses_to_merge_bots(database_url: str) -> None:
    async with Store.open(database_url) as store:
        await store.migrate()
        await store.upsert_users([UserProfile(id=1)], bot="other")
    with pytest.raises(RuntimeError, match="bots other than 'default' have data"):
        await run_migration(database_url, command.downgrade, BEFORE_BOTS)
    async with Store.open(database_url) as store:
        await store.delete_user(1, bot="other")
    await run_migration(database_url, command.downgrade, BEFORE_BOTS)
    engine = create_engine(database_url)
    try:
        async with engine.connect() as connection:
            assert await connection.scalar(select(func.count()).select_from(old_users)) == 0
            assert await connection.scalar(text("SELECT version_num FROM alembic_version")) == (
                BEFORE_BOTS
            )
    finally:
        await engine.dispose()
