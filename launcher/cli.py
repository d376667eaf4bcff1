"""``tgbroadcast``: the entry point. The only place that installs signal handlers and logging.

Commands:

* ``run`` — everything in one process: the API (gRPC + HTTP), one worker, and an embedded
  nats-server when ``nats.url`` is empty. What ``make run`` runs.
* ``server`` — the API only.
* ``worker`` — one worker; start as many as you like, on any machine
  that reaches NATS and the database.
* ``migrate`` — apply the database migrations and exit.
* ``send`` — a client: send a broadcast through the gRPC API, optionally ``--watch`` it
  (``tgbroadcast_client.cli``; ``tgbroadcast send --help``).

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
import gc
import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

import tgbroadcast.core.tracing as tracing
from tgbroadcast.core.config import Settings, load_settings
from tgbroadcast.core.config.settings import LOG_LEVELS
from tgbroadcast.core.domain.errors import ConfigError
from tgbroadcast.core.logs import configure_logging
from tgbroadcast.core.store import Store
from tgbroadcast.launcher.app import running_service
from tgbroadcast.launcher.shutdown import Watchdog
from tgbroadcast_client.cli import main as send_main

logger = logging.getLogger("tgbroadcast")

COMMANDS = ("run", "server", "worker", "migrate")
SERVICE_NAMES = {
    "run": "tgbroadcast",
    "server": "tgbroadcast-server",
    "worker": "tgbroadcast-worker",
}
"""Each command's tracing ``service.name`` unless ``OTEL_SERVICE_NAME`` names one."""


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["send"]:  # a client of the API: no settings, no logging set-up
        return send_main(argv[1:])
    args = _parser().parse_args(argv)
    command: str = args.command
    try:
        settings = load_settings(args.config, environ=os.environ)
        if command in ("run", "server"):
            settings.require_api_tokens()
        if command in ("run", "worker"):
            settings.require_bot_token()
    except ConfigError as exc:
        print(f"tgbroadcast: {exc}", file=sys.stderr)
        return 2
    configure_logging(
        level=args.log_level or settings.log.level,
        format=settings.log.format,
        secrets=(
            settings.telegram.token,
            settings.nats.password,
            *(t.token for t in settings.server.api_tokens),
        ),
    )
    traces = None
    try:
        if command in SERVICE_NAMES:  # OpenTelemetry, when installed and the OTEL_* say so
            traces = tracing.setup(SERVICE_NAMES[command])
        asyncio.run(_serve(settings, command))
    except ConfigError as exc:
        logger.error("configuration error", extra={"error": str(exc)})
        return 2
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
        help="run (all in one), server, worker or migrate; `tgbroadcast send --help` sends a "
        "broadcast",
    )
    return parser


async def _serve(settings: Settings, command: str) -> None:
    if command == "migrate":
        async with Store.open(settings.database.url, settings.database) as store:
            await store.migrate()
        logger.info("database migrated")
        return
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
    async with running_service(
        settings,
        api=command in ("run", "server"),
        workers=1 if command in ("run", "worker") else 0,
    ) as running:
        # What start-up built (modules, models, compiled statements) lives as long as the
        # process: moved out of the collector's sight (with whatever else exists now), a full
        # collection no longer walks it. That walk took ~150 ms — a stall of the event loop
        # that cost a paid broadcast as many sends.
        gc.collect()
        gc.freeze()
        logger.info("ready; stop with Ctrl-C", extra={"command": command})
        await stop.wait()
        logger.info("shutting down", extra={"shutdown_grace": settings.server.shutdown_grace})
        await running.drain()
    logger.info("stopped")
