"""``tgbroadcast``: the entry point. The only place that installs signal handlers and logging.

Commands:

* ``run`` — everything in one process: the API (gRPC + HTTP), one worker, and an embedded
  nats-server when ``nats.url`` is empty. What ``make run`` runs.
* ``server`` — the API only.
* ``worker`` — one worker; start as many as you like, on any machine
  that reaches NATS and the database.
* ``migrate`` — apply the database migrations and exit.
* ``bots reseal`` — seal every bot token stored through the API again with the first key of
  ``server.secret_key`` (a key rotation: docs/security.md); exit 1 if a token opened with no
  key (those are named and left as they were).
* ``send`` — a client: send a broadcast through the gRPC API, optionally ``--watch`` it
  (``tgbroadcast_client.cli``; ``tgbroadcast send --help``).
* ``bots create|list|get|delete`` — a client: manage bots through the gRPC API
  (``tgbroadcast_client.cli_bots``; ``tgbroadcast bots --help``).

SIGINT or SIGTERM shuts down in order (:mod:`tgbroadcast.launcher.shutdown`): readiness fails
and gRPC health says NOT_SERVING, open watch streams are told to end, the listeners close once
the requests in flight completed, the worker finishes the sends in hand (unfinished jobs go to
other workers), then NATS and the database close — all within ``server.shutdown_grace``
seconds: past that a watchdog logs and ends the process (exit code 1). A second signal exits
at once.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import tgbroadcast.core.tracing as tracing
from tgbroadcast.core.bots.sealing import Sealer
from tgbroadcast.core.config import Settings, load_settings
from tgbroadcast.core.config.settings import LOG_LEVELS
from tgbroadcast.core.domain.errors import ConfigError, NatsServerError
from tgbroadcast.core.logs import configure_logging
from tgbroadcast.core.store import Store
from tgbroadcast.launcher import heap
from tgbroadcast.launcher.app import running_service
from tgbroadcast.launcher.shutdown import Watchdog

logger = logging.getLogger("tgbroadcast")

COMMANDS = ("run", "server", "worker", "migrate", "bots")
BOTS_ACTIONS = ("reseal",)
SERVICE_NAMES = {
    "run": "tgbroadcast",
    "server": "tgbroadcast-server",
    "worker": "tgbroadcast-worker",
}
"""Each command's tracing ``service.name`` unless ``OTEL_SERVICE_NAME`` names one."""


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    # The API's clients: no settings, no logging set-up, and imported only for them (a
    # worker never loads the gRPC client).
    if argv[:1] == ["send"]:
        from tgbroadcast_client.cli import main as send_main

        return send_main(argv[1:])
    if argv[:1] == ["bots"] and argv[1:2] != ["reseal"]:
        from tgbroadcast_client.cli_bots import main as bots_main

        return bots_main(argv[1:])
    parser = _parser()
    args = parser.parse_args(argv)
    command: str = args.command
    if (command == "bots") != (args.action is not None):
        parser.error("`bots` takes an action (bots reseal); the other commands take none")
    try:
        settings = load_settings(args.config, environ=os.environ)
        if command in ("run", "server"):
            settings.require_api_tokens()
        if command in ("run", "worker"):
            settings.require_bots()
    except ConfigError as exc:
        print(f"tgbroadcast: {exc}", file=sys.stderr)
        return 2
    configure_logging(
        level=args.log_level or settings.log.level,
        format=settings.log.format,
        secrets=settings.secrets(),
    )
    traces = None
    try:
        if command in SERVICE_NAMES:  # OpenTelemetry, when installed and the OTEL_* say so
            traces = tracing.setup(SERVICE_NAMES[command])
        if command == "bots":
            return asyncio.run(_reseal(settings))
        if command == "migrate":
            asyncio.run(_migrate(settings))
            return 0
        _make_data_dir(settings)
        with heap.starting() as ready:  # the collector paused until the service is up
            asyncio.run(_serve(settings, command, ready))
    except ConfigError as exc:
        logger.error("configuration error", extra={"error": str(exc)})
        return 2
    except NatsServerError as exc:  # its store in use by another process, its port taken...
        logger.error("the embedded nats-server cannot start", extra={"error": str(exc)})
        return 1
    finally:
        if traces is not None:
            traces.shutdown()  # exports the spans still buffered
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tgbroadcast", description="Telegram Broadcast Service")
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        help="YAML settings file (default: config/config.yaml when present)",
    )
    parser.add_argument(
        "--log-level",
        default=None,
        choices=LOG_LEVELS,
        type=str.upper,
        help="overrides log.level (TGB_LOG_LEVEL, default INFO)",
    )
    parser.add_argument(
        "command",
        choices=COMMANDS,
        help="run (all in one), server, worker, migrate or bots; `tgbroadcast send --help` "
        "sends a broadcast",
    )
    parser.add_argument(
        "action",
        nargs="?",
        choices=BOTS_ACTIONS,
        help="with bots: reseal (re-seal the stored bot tokens with the first secret key)",
    )
    return parser


async def _reseal(settings: Settings) -> int:
    """``bots reseal``: 0 when every stored token was re-sealed, 1 when some opened with no
    key of ``server.secret_key`` (named on stderr; left as they were), 2 without a key."""
    if not settings.server.secret_keys:
        raise ConfigError("server.secret_key", "is required to re-seal the stored bot tokens")
    sealer = Sealer(settings.server.secret_keys)
    async with Store.open(settings.database.url, settings.database) as store:
        await store.migrate()
        resealed, unopened = await store.reseal_bots(
            open_token=sealer.open_or_none, seal_token=sealer.seal
        )
    print(f"re-sealed {len(resealed)} bot token(s) with the first key of server.secret_key")
    if unopened:
        print(
            "no key of server.secret_key opens the token of: " + ", ".join(unopened),
            file=sys.stderr,
        )
        return 1
    return 0


def _make_data_dir(settings: Settings) -> None:
    """``data_dir`` made (the embedded nats-server's store, SQLite's file, the URL file a
    worker reads), or a configuration error naming it — not a traceback from deep inside."""
    try:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            "data_dir", f"{settings.data_dir} cannot be made: {exc.strerror or exc}"
        ) from None


async def _migrate(settings: Settings) -> None:
    async with Store.open(settings.database.url, settings.database) as store:
        await store.migrate()
    logger.info("database migrated")


async def _serve(settings: Settings, command: str, ready: Callable[[], None]) -> None:
    """``run``, ``server`` or ``worker`` until a signal; ``ready()`` once it is up."""
    stop = asyncio.Event()
    watchdog = Watchdog(settings.server.shutdown_grace)

    def on_signal() -> None:
        if stop.is_set():  # a second Ctrl-C: no more waiting
            logger.warning("second signal; exiting at once")
            os._exit(130)
        watchdog.start()
        stop.set()

    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, on_signal)
    started = asyncio.Event()

    async def serve() -> None:
        async with running_service(
            settings,
            api=command in ("run", "server"),
            workers=1 if command in ("run", "worker") else 0,
        ) as running:
            started.set()
            # Start-up's garbage collected and what it built frozen (a full collection
            # walking it took ~150 ms: a stall of the event loop that cost a paid broadcast
            # as many sends).
            ready()
            logger.info("ready; stop with Ctrl-C", extra={"command": command})
            await stop.wait()
            logger.info("shutting down", extra={"shutdown_grace": settings.server.shutdown_grace})
            await running.drain()

    serving = asyncio.ensure_future(serve())
    stopping = asyncio.ensure_future(stop.wait())
    await asyncio.wait((serving, stopping), return_when=asyncio.FIRST_COMPLETED)
    stopping.cancel()
    if not started.is_set() and not serving.done():
        # A signal during start-up (waiting for NATS or the database to be there) stops it
        # there: a clean shutdown, nothing was accepted yet.
        serving.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await serving
        logger.info("stopped during start-up", extra={"command": command})
        return
    await serving
    logger.info("stopped")
