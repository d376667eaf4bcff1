"""How long the store takes to accept a broadcast to many recipients.

Run ``python -m bench.accept --backend sqlite|postgres|mariadb --recipients 1000000``. On a
new database of its own (a temporary SQLite file, or a ``tgb_bench_<hex>`` database created
on the server and dropped at the end) it measures, in seconds:

* ``new``: :meth:`Store.create_broadcast` to ``--recipients`` ids no user row has yet;
* ``existing``: the same again, every recipient now a known user;
* ``all_users``: a broadcast to every active user;
* ``upsert_10k``: :meth:`Store.upsert_users` with 10,000 profiles, half of them new;
* ``job_batches``: cutting the first broadcast's recipients into jobs, ``--batch-size``
  (1,000) each, as the dispatcher does (:meth:`Store.job_batches`);

and prints them as one JSON line, with the process's peak memory (``max_rss_mb``). The ids
are distinct, random, Telegram-like (positive up to 10^10 and some negative group ids) and
in random order, as a request would carry them; ``--ids sequential`` takes 1..N in order
instead (the easiest case for every index).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import resource
import secrets
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any, Final

from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from tgbroadcast.core.domain.model import Content, NewBroadcast, UserProfile
from tgbroadcast.core.store import Store

ADMIN_URLS: Final = {
    "postgres": "postgresql+asyncpg://postgres@127.0.0.1:5432/test",
    "mariadb": "mysql+asyncmy://root@127.0.0.1:3306/test",
}
"""Where the servers are by default: a database that exists, to create the bench's own."""

UPSERTED: Final = 10_000


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--backend", choices=("sqlite", "postgres", "mariadb"), required=True)
    parser.add_argument("--recipients", type=int, default=1_000_000)
    parser.add_argument("--batch-size", type=int, default=1_000)
    parser.add_argument("--ids", choices=("random", "sequential"), default="random")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--admin-url",
        help="SQLAlchemy URL of an existing database on the server (default: local server)",
    )
    arguments = parser.parse_args(argv)
    if arguments.recipients < 1 or arguments.batch_size < 1:
        parser.error("--recipients and --batch-size must be positive")
    numbers = asyncio.run(
        measure(
            arguments.backend,
            arguments.recipients,
            batch_size=arguments.batch_size,
            sequential=arguments.ids == "sequential",
            seed=arguments.seed,
            admin_url=arguments.admin_url or ADMIN_URLS.get(arguments.backend, ""),
        )
    )
    print(json.dumps(numbers))


async def measure(
    backend: str,
    recipients: int,
    *,
    batch_size: int,
    sequential: bool = False,
    seed: int = 1,
    admin_url: str,
) -> dict[str, Any]:
    """Run every measurement on a database of its own; the numbers by name."""
    if sequential:
        ids = tuple(range(1, recipients + 1))
    else:
        ids = recipient_ids(recipients, random.Random(seed))
    new = NewBroadcast(content=Content(message="bench"), user_ids=ids)
    everyone = NewBroadcast(content=Content(message="bench"), all_users=True)
    half_known = ids[: UPSERTED // 2] + tuple(-i for i in range(1, UPSERTED // 2 + 1))
    profiles = [UserProfile(id=i, username=f"u{i}", first_name="Bench") for i in half_known]
    numbers: dict[str, Any] = {
        "backend": backend,
        "recipients": recipients,
        "ids": "sequential" if sequential else "random",
        "batch_size": batch_size,
    }
    async with database(backend, admin_url) as url, Store.open(url) as store:
        await store.migrate()
        started = time.perf_counter()
        created = await store.create_broadcast(new)
        numbers["new"] = round(time.perf_counter() - started, 3)
        assert created.total == recipients, created

        started = time.perf_counter()
        again = await store.create_broadcast(new)
        numbers["existing"] = round(time.perf_counter() - started, 3)
        assert again.total == recipients, again

        started = time.perf_counter()
        audience = await store.create_broadcast(everyone)
        numbers["all_users"] = round(time.perf_counter() - started, 3)
        assert audience.total == recipients, audience

        started = time.perf_counter()
        await store.upsert_users(profiles)
        numbers["upsert_10k"] = round(time.perf_counter() - started, 3)

        started = time.perf_counter()
        read = 0
        async for batch in store.job_batches(created.id, batch_size=batch_size):
            read += len(batch)
        numbers["job_batches"] = round(time.perf_counter() - started, 3)
        assert read == recipients, read
    numbers["max_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    return numbers


def recipient_ids(count: int, rng: random.Random) -> tuple[int, ...]:
    """``count`` distinct ids in random order: users up to 10^10 and a few groups."""
    groups = count // 20
    users = rng.sample(range(1, 10**10), count - groups)
    chats = rng.sample(range(10**12, 2 * 10**12), groups)
    ids = users + [-chat for chat in chats]
    rng.shuffle(ids)
    return tuple(ids)


@contextlib.asynccontextmanager
async def database(backend: str, admin_url: str) -> AsyncIterator[str]:
    """The URL of a new empty database on ``backend``, removed on exit."""
    if backend == "sqlite":
        with tempfile.TemporaryDirectory(prefix="tgb-bench-") as folder:
            yield f"sqlite+aiosqlite:///{Path(folder) / 'bench.db'}"
        return
    name = f"tgb_bench_{secrets.token_hex(6)}"
    base, _, query = admin_url.partition("?")
    url = f"{base.rsplit('/', 1)[0]}/{name}" + (f"?{query}" if query else "")
    if backend == "postgres":
        await admin(admin_url, f"CREATE DATABASE {name}")
        drop = f"DROP DATABASE {name} WITH (FORCE)"
    else:
        await admin(admin_url, f"CREATE DATABASE {name} CHARACTER SET utf8mb4")
        drop = f"DROP DATABASE {name}"
    try:
        yield url
    finally:
        await admin(admin_url, drop)


async def admin(url: str, statement: str) -> None:
    """Run ``statement`` outside any transaction (CREATE/DROP DATABASE need that)."""
    engine = create_async_engine(url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    try:
        async with engine.connect() as connection:
            await connection.execute(text(statement))
    finally:
        await engine.dispose()


if __name__ == "__main__":
    main()
