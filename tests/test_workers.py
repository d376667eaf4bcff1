"""Several worker processes, and what happens when processes or NATS die.

Every process here is real: `tgbroadcast server` and `tgbroadcast worker` children sharing the
test's database (SQLite file, or PostgreSQL/MariaDB with CI=true) and NATS (the server's
embedded one, or the external one), sending to the simulator in the test process.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import aiohttp

from tests.fixtures.cluster import AUTH, cluster, environ
from tests.fixtures.held_calls import HoldingSimulator
from tests.fixtures.nats import no_jobs, wait_until
from tests.fixtures.services import POSTGRES_ADDR, free_port
from tests.fixtures.stack import Backend, on_sqlite_and_postgres, open_backend, start_stack
from tests.fixtures.telegram import sends_by_chat, sent_at_least
from tests.fixtures.watching import assert_watch_complete, watch
from tgbroadcast.core.queue import Job, Queue
from tgbroadcast.launcher.natsserver import EmbeddedNatsServer
from tgbroadcast.simulator import Limit, RateLimits, Simulator


@on_sqlite_and_postgres
async def test_workers_share_one_budget_and_survive_kills(backend: Backend, tmp_path: Path) -> None:
    """One cluster, three acts: three workers share the bot's budget; a worker killed mid-
    broadcast loses nobody; a server killed right after its 202 loses nothing."""
    concurrency = 4
    limits = RateLimits(bot=Limit(100, 1.0))
    async with Simulator(rate_limits=limits) as simulator:
        # The service's budget (90/s) sits a little under the simulator's limit (100 in any
        # second): the budget is kept on permit times, and a loaded 2-core machine delays
        # some requests more than others on their way. Three workers each sending at 90/s
        # on their own would be refused hundreds of times.
        env = environ(
            backend,
            simulator,
            TGB_TELEGRAM_RATE_LIMIT="90",
            TGB_WORKER_CONCURRENCY=str(concurrency),
        )
        async with cluster(env, tmp_path) as services:
            server, *workers = await asyncio.gather(
                services.server(), services.worker(), services.worker(), services.worker()
            )

            # 1. Three processes, one budget: the simulator, which enforces 100 per second
            # per bot, never has to answer 429.
            shared = list(range(1, 151))
            assert_watch_complete(await services.watch(await services.send(shared)), set(shared))
            assert [c for c in simulator.calls if c.error_code == 429] == []
            assert sends_by_chat(simulator) == dict.fromkeys(shared, 1)

            # 2. kill -9 of a worker mid-broadcast: the others finish its jobs.
            before = sends_by_chat(simulator)
            killed = list(range(1001, 1201))
            broadcast_id = await services.send(killed)
            await wait_until(lambda: sent_at_least(simulator, sum(before.values()) + 40))
            await workers[0].kill()
            assert_watch_complete(await services.watch(broadcast_id), set(killed))
            counts = sends_by_chat(simulator) - before
            assert set(counts) == set(killed)  # nobody lost
            assert sum(n - 1 for n in counts.values()) <= concurrency  # docs/design.md's bound

            # 3. kill -9 of the server right after it answered 202.
            before = sends_by_chat(simulator)
            orphaned = list(range(2001, 2101))
            broadcast_id = await services.send(orphaned)
            await server.kill()
            await services.server()
            assert_watch_complete(await services.watch(broadcast_id), set(orphaned))
            assert sends_by_chat(simulator) - before == dict.fromkeys(orphaned, 1)
    assert [c for c in simulator.calls if c.error_code == 429] == []


async def test_a_job_held_twice_at_once_sends_each_recipient_once(
    backend: Backend, tmp_path: Path
) -> None:
    """A broadcast's job is taken by one worker; while it sends, the same batch is published
    twice more under other Nats-Msg-Ids (what a re-dispatch outside JetStream's duplicate
    window does), so it is held by two or three jobs at once, in both worker processes (a
    worker holds at most two jobs). Each recipient is claimed by one job; the others hand
    theirs back and ack once everyone is final. Every recipient gets exactly one message."""
    async with HoldingSimulator() as simulator:
        env = environ(
            backend,
            simulator,
            TGB_TELEGRAM_RATE_LIMIT="5",
            TGB_WORKER_CONCURRENCY="4",
            TGB_LOG_FORMAT="json",
        )
        async with cluster(env, tmp_path) as services:
            _, *workers = await asyncio.gather(
                services.server(), services.worker(), services.worker()
            )
            # Three sends answered, then Telegram holds the first job's next one: it holds
            # its recipients until the copies have been handed back.
            held = simulator.hold("sendMessage", after=3)
            try:
                recipients = list(range(1, 31))
                broadcast_id = await services.send(recipients)
                await held.holding()
                async with _jobs_queue(backend, env) as queue:
                    job = Job(broadcast_id=broadcast_id, user_ids=tuple(recipients))
                    for copy in ("again-1", "again-2"):
                        await queue.jetstream.publish(
                            queue.names.jobs_subject,
                            job.encode(),
                            headers={"Nats-Msg-Id": f"{job.msg_id}-{copy}"},
                        )

                    async def handed_back() -> bool:
                        # A JSON line naming the job (its id, broadcast and delivery count).
                        return any(
                            entry["message"].startswith("job handed back")
                            and entry["job"] == job.msg_id
                            and entry["broadcast_id"] == broadcast_id
                            and entry["attempt"] >= 1
                            for worker in workers
                            for line in worker.log().splitlines()
                            if line.startswith("{")
                            for entry in [json.loads(line)]
                        )

                    # The copies really ran while the first job held the recipients.
                    await wait_until(handed_back)
                    held.release()
                    assert_watch_complete(await services.watch(broadcast_id), set(recipients))
                    await wait_until(lambda: no_jobs(queue))  # the copies were acked
            finally:
                held.release()
            assert sends_by_chat(simulator) == dict.fromkeys(recipients, 1)


@asynccontextmanager
async def _jobs_queue(backend: Backend, env: Mapping[str, str]) -> AsyncIterator[Queue]:
    """The cluster's queue (its embedded NATS once the server wrote the URL, or the external
    one), with the workers' AckWait."""
    url = backend.environ["TGB_NATS_URL"] or (backend.data_dir / "nats" / "url").read_text()
    ack_wait = float(env["TGB_NATS_ACK_WAIT"])
    async with Queue.connect(url.strip(), prefix=backend.prefix, ack_wait=ack_wait) as queue:
        yield queue


async def test_a_nats_restart_pauses_and_resumes(tmp_path: Path, simulator: Simulator) -> None:
    store_dir = tmp_path / "nats"
    port = free_port()
    async with AsyncExitStack() as servers, AsyncExitStack() as stack:
        backend = await stack.enter_async_context(open_backend("sqlite", tmp_path))
        nats = await servers.enter_async_context(EmbeddedNatsServer(store_dir=store_dir, port=port))
        backend = Backend(
            environ={**backend.environ, "TGB_NATS_URL": nats.url},
            prefix=backend.prefix,
            data_dir=backend.data_dir,
        )
        services = await stack.enter_async_context(
            start_stack(backend, simulator, {"TGB_TELEGRAM_RATE_LIMIT": "50"})
        )
        recipients = list(range(1, 151))
        async with aiohttp.ClientSession() as session:
            response = await session.post(
                services.http_url + "/send-message",
                json={"message": "through a restart", "user_ids": recipients},
                headers=AUTH,
            )
            broadcast_id = (await response.json())["broadcast_id"]
        await wait_until(lambda: sent_at_least(simulator, 30))
        url = nats.url
        await nats.stop()
        restarted = await servers.enter_async_context(
            EmbeddedNatsServer(store_dir=store_dir, port=port)
        )
        assert restarted.url == url
        assert_watch_complete(await watch(services, broadcast_id), set(recipients))
    assert sends_by_chat(simulator) == dict.fromkeys(recipients, 1)


async def test_a_database_outage_pauses_and_resumes(tmp_path: Path, simulator: Simulator) -> None:
    """Every connection of the service to PostgreSQL is killed mid-broadcast: outcomes in
    hand are kept and written once the database answers again; nobody is lost or doubled."""
    simulator.rate_limits = RateLimits(bot=Limit(40, 1.0))
    async with open_backend("postgres", tmp_path) as backend:
        database = backend.environ["TGB_DATABASE_DSN"].rsplit("/", 1)[1]
        async with start_stack(backend, simulator, {"TGB_TELEGRAM_RATE_LIMIT": "40"}) as services:
            recipients = list(range(1, 121))
            async with (
                aiohttp.ClientSession() as session,
                session.post(
                    services.http_url + "/send-message",
                    json={"message": "through an outage", "user_ids": recipients},
                    headers=AUTH,
                ) as response,
            ):
                broadcast_id = (await response.json())["broadcast_id"]
            await wait_until(lambda: sent_at_least(simulator, 30))
            killed = await _terminate_connections(database)
            assert killed > 0
            assert_watch_complete(await watch(services, broadcast_id), set(recipients))
    assert sends_by_chat(simulator) == dict.fromkeys(recipients, 1)


async def _terminate_connections(database: str) -> int:
    import asyncpg  # type: ignore[import-untyped]

    host, port = POSTGRES_ADDR
    admin = await asyncpg.connect(host=host, port=port, user="postgres", database="test")
    try:
        rows = await admin.fetch(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = $1 AND pid <> pg_backend_pid()",
            database,
        )
    finally:
        await admin.close()
    return len(rows)
