"""``make demo``: the whole pipeline against the Telegram simulator, on fixed local ports.

Starts the simulator on 127.0.0.1:8081 and the service (HTTP 8080, gRPC 50051, API token
``demo-token-0123456789``, data in ``./data/demo``) in one process, and prints a curl to try.
Settings can still be overridden with ``TGB_*`` variables.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
from pathlib import Path

from tgbroadcast.core.config import load_settings
from tgbroadcast.core.logs import configure_logging
from tgbroadcast.launcher.app import running_service
from tgbroadcast.simulator import Simulator

DEMO_BOT_TOKEN = "123456789:DEMOdemoDEMOdemoDEMOdemoDEMOdemo123"  # noqa: S105 - the simulator's
DEMO_API_TOKEN = "demo-token-0123456789"  # noqa: S105 - documented demo value


async def demo(simulator_port: int) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with Simulator(port=simulator_port) as simulator:
        environ = {
            "TGB_DATA_DIR": str(Path("data") / "demo"),
            "TGB_TELEGRAM_TOKEN": DEMO_BOT_TOKEN,
            "TGB_SERVER_API_TOKEN": DEMO_API_TOKEN,
            **os.environ,
            "TGB_TELEGRAM_API_URL": simulator.api_url,
        }
        settings = load_settings(None, environ=environ)
        configure_logging(level="INFO", secrets=settings.secrets())  # TGB_* may add some
        async with running_service(settings, api=True, workers=1) as running:
            assert running.api is not None
            http = f"http://{settings.server.host}:{running.api.http_port}"
            print(
                f"""
Telegram simulator: {simulator.api_url}   (what it received: curl -s {simulator.api_url}/_sim/calls)
REST API:           {http}
gRPC API:           {settings.server.host}:{running.api.grpc_port}
API token:          {DEMO_API_TOKEN}

Try:
  curl -s -X POST {http}/send-message \\
    -H 'Authorization: Bearer {DEMO_API_TOKEN}' -H 'Content-Type: application/json' \\
    -d '{{"message": "Hello from the demo!", "user_ids": [111, 222, 333]}}'
  curl -s {http}/v1/broadcasts/1 -H 'Authorization: Bearer {DEMO_API_TOKEN}'

Stop with Ctrl-C.""",
                flush=True,
            )
            await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(prog="make demo", description=__doc__)
    parser.add_argument("--simulator-port", type=int, default=8081)
    args = parser.parse_args()
    configure_logging(level="INFO", secrets=(DEMO_API_TOKEN,))
    asyncio.run(demo(args.simulator_port))


if __name__ == "__main__":
    main()
