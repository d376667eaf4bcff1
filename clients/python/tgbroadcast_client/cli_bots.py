"""``tgbroadcast bots``: create, list, show and delete the service's bots (scope
``bots:admin``).

::

    export TGBROADCAST_BOT_TOKEN=123456789:AA...    # from @BotFather
    tgbroadcast bots create shop --rate-limit 30
    tgbroadcast bots create news --bot-token-stdin < news.token
    tgbroadcast bots list
    tgbroadcast bots get shop --json
    tgbroadcast bots delete shop

``create`` reads the bot token from the environment variable ``TGBROADCAST_BOT_TOKEN`` (or the
one ``--bot-token-env`` names), or with ``--bot-token-stdin`` from the first line of standard
input (without echo on a terminal) — never from the command line, where ``ps`` and the shell's
history would show it. The server checks it with Telegram's getMe and stores it encrypted; no
output ever holds it. A zero ``--rate-limit`` / ``--paid-rate-limit`` or an empty
``--api-url`` takes the server's ``telegram:`` settings.

The address, API token and TLS options are those of ``tgbroadcast send``
(:mod:`tgbroadcast_client.cli_connection`), after the subcommand. (``tgbroadcast bots
reseal`` is the service's own command, run with its settings: :mod:`tgbroadcast.launcher.cli`.)

Exit codes: 0 done; 1 the service refused or failed the call (the message says why, with
every offending field); 2 bad command line or no bot token; 130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any, TextIO

import grpc
from google.protobuf.json_format import MessageToDict

from tgbroadcast.v1 import broadcast_pb2 as pb
from tgbroadcast_client._client import BroadcastClient
from tgbroadcast_client._errors import BroadcastClientError
from tgbroadcast_client.cli_connection import (
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    add_connection_arguments,
    credentials_of,
    report_error,
    token_from,
)

__all__ = ["EXIT_ERROR", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_USAGE", "bot_json", "main"]

PROG = "tgbroadcast bots"
BOT_TOKEN_VARIABLE = "TGBROADCAST_BOT_TOKEN"
LIST_COLUMNS = ("NAME", "BOT_ID", "USERNAME", "RATE", "PAID RATE", "SOURCE")


def main(
    argv: Sequence[str] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    stdin: TextIO | None = None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    """Runs ``tgbroadcast bots`` with ``argv`` (the arguments after ``bots``)."""
    environ = os.environ if environ is None else environ
    source = sys.stdin if stdin is None else stdin
    out = sys.stdout if stdout is None else stdout
    err = sys.stderr if stderr is None else stderr
    try:
        args, extra = _parser(environ).parse_known_args(argv)
    except SystemExit as exc:  # argparse has printed the usage and the problem
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    if extra:  # not echoed: a bot token pasted here must not land in a log too
        print(
            f"{PROG}: {len(extra)} unexpected argument(s); a bot token is never taken on the "
            f"command line (set {BOT_TOKEN_VARIABLE} or pass --bot-token-stdin)",
            file=err,
        )
        return EXIT_USAGE
    token = args.token or token_from(environ)
    if not token:
        print(f"{PROG}: no API token: pass --token or set TGBROADCAST_TOKEN", file=err)
        return EXIT_USAGE
    try:
        bot_token = _bot_token(args, environ, source, err) if args.command == "create" else ""
        credentials = credentials_of(args)
    except (OSError, ValueError) as exc:
        print(f"{PROG}: {exc}", file=err)
        return EXIT_USAGE
    try:
        return asyncio.run(_run(args, token, bot_token, credentials, out, err))
    except KeyboardInterrupt:
        print("interrupted", file=err)
        return EXIT_INTERRUPTED


def _parser(environ: Mapping[str, str]) -> argparse.ArgumentParser:
    connection = argparse.ArgumentParser(add_help=False)
    add_connection_arguments(connection, environ)
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Manage the service's bots through its gRPC API (scope bots:admin).",
        epilog="`tgbroadcast bots reseal` is not a client command: run on a server with its "
        "settings, it seals the stored bot tokens again after a server.secret_key rotation.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    create = commands.add_parser(
        "create",
        parents=[connection],
        help="add a bot; its token from $" + BOT_TOKEN_VARIABLE + " or stdin",
        description="Add a bot. Its token is read from an environment variable or stdin, "
        "never from the command line.",
    )
    create.add_argument("name", help="the bot's name: 1 to 32 of a-z 0-9 _ -")
    source = create.add_mutually_exclusive_group()
    source.add_argument(
        "--bot-token-env",
        default=BOT_TOKEN_VARIABLE,
        metavar="VARIABLE",
        help=f"the environment variable holding the bot token (default: {BOT_TOKEN_VARIABLE})",
    )
    source.add_argument(
        "--bot-token-stdin",
        action="store_true",
        help="read the bot token from the first line of stdin (no echo on a terminal)",
    )
    create.add_argument(
        "--rate-limit", type=float, default=0.0, help="messages per second (default: the server's)"
    )
    create.add_argument(
        "--paid-rate-limit",
        type=float,
        default=0.0,
        help="messages per second of paid broadcasts (default: the server's)",
    )
    create.add_argument("--api-url", default="", help="its Bot API server (default: the server's)")
    create.add_argument("--json", action="store_true", help="print the bot as JSON")
    listing = commands.add_parser("list", parents=[connection], help="the bots the token may use")
    listing.add_argument("--json", action="store_true", help="print a JSON array of the bots")
    get = commands.add_parser("get", parents=[connection], help="one bot")
    get.add_argument("name")
    get.add_argument("--json", action="store_true", help="print the bot as JSON")
    delete = commands.add_parser(
        "delete",
        parents=[connection],
        help="remove a bot created through the API (not while it has unfinished broadcasts)",
    )
    delete.add_argument("name")
    return parser


def _bot_token(
    args: argparse.Namespace, environ: Mapping[str, str], stdin: TextIO, stderr: TextIO
) -> str:
    """The bot token to create the bot with; ``ValueError`` (a usage error) when none."""
    if args.bot_token_stdin:
        if stdin.isatty():
            token = getpass.getpass("bot token: ", stream=stderr)
        else:
            token = stdin.readline()
        token = token.strip()
        if not token:
            raise ValueError("--bot-token-stdin: stdin holds no bot token")
        return token
    token = environ.get(args.bot_token_env, "").strip()
    if not token:
        raise ValueError(
            f"no bot token: set {args.bot_token_env} or pass --bot-token-stdin (never on the "
            "command line: ps and the shell's history would show it)"
        )
    return token


async def _run(
    args: argparse.Namespace,
    token: str,
    bot_token: str,
    credentials: grpc.ChannelCredentials | None,
    out: TextIO,
    err: TextIO,
) -> int:
    try:
        async with BroadcastClient(args.target, token, credentials=credentials) as client:
            if args.command == "create":
                bot = await client.create_bot(
                    args.name,
                    bot_token,
                    rate_limit=args.rate_limit,
                    paid_rate_limit=args.paid_rate_limit,
                    api_url=args.api_url,
                )
                _print_bot(bot, out, as_json=args.json, created=True)
            elif args.command == "list":
                _print_list(await client.list_bots(), out, as_json=args.json)
            elif args.command == "get":
                _print_bot(await client.get_bot(args.name), out, as_json=args.json)
            else:
                await client.delete_bot(args.name)
                print(f"bot {args.name} deleted", file=out)
    except BroadcastClientError as exc:
        return report_error(f"{PROG} {args.command}", exc, err)
    return EXIT_OK


def bot_json(bot: pb.Bot) -> dict[str, Any]:
    """A bot as the REST API spells it: every field, ``created_at`` as RFC 3339 or ``null``."""
    data = MessageToDict(
        bot, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
    data["bot_id"] = bot.bot_id
    data.setdefault("created_at", None)
    return data


def _print_bot(bot: pb.Bot, out: TextIO, *, as_json: bool, created: bool = False) -> None:
    if as_json:
        print(json.dumps(bot_json(bot)), file=out)
        return
    if created:
        print(f"bot {bot.name} created", file=out)
    for key, value in bot_json(bot).items():
        print(f"  {key}: {'' if value is None else value}", file=out)


def _print_list(bots: Sequence[pb.Bot], out: TextIO, *, as_json: bool) -> None:
    if as_json:
        print(json.dumps([bot_json(bot) for bot in bots]), file=out)
        return
    rows = [LIST_COLUMNS] + [
        (
            bot.name,
            str(bot.bot_id),
            f"@{bot.username}" if bot.username else "-",
            f"{bot.rate_limit:g}/s",
            f"{bot.paid_rate_limit:g}/s",
            bot.source or "-",
        )
        for bot in bots
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(LIST_COLUMNS))]
    for row in rows:
        cells = (cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        print("  ".join(cells).rstrip(), file=out)
