"""``tgbroadcast send``: send a broadcast from the command line, and watch it run.

::

    tgbroadcast send --target localhost:50051 --message "Hello!" --user-id 111 222 --watch
    tgbroadcast send --media-type copy --source=-1001234567890:42 --all-users
    tgbroadcast send --media-type album --parse-mode HTML --tag vip \
        --album-item "photo:https://cdn.example.com/a.jpg:<b>One</b>" --album-item photo:AgACAgIAAx

Each kind of message says what it needs: ``photo`` and the other media an ``--media-url`` (an
http(s) URL or a file_id) or a ``--media-file``; ``copy`` and ``forward`` a ``--source``
(``CHAT_ID:MESSAGE_ID``; write ``--source=-100...:42`` for a channel's negative id);
``album`` two to ten ``--album-item TYPE:URL_OR_FILE_ID[:CAPTION]`` or an ``--album-file``.
In an ``--album-item`` the caption follows the first ``:`` after the URL's path begins
(``photo:https://host:8443/a.jpg:Caption: with colons``), or after a file_id. An
``--album-file`` is a JSON array of items as the REST body's ``album`` holds them
(``[{"media_type": "photo", "media_url": "...", "caption": "...", "has_spoiler": true}]``).
Anything missing or out of place is a usage error (exit 2) before anything is sent.
``--parse-mode`` takes ``html`` or ``markdown_v2``, or Telegram's ``HTML`` / ``MarkdownV2``,
in any case.

``--bot NAME`` (else ``TGBROADCAST_BOT``) names the bot that sends it and whose users the
audience is; without it the server picks the token's only bot, else ``default``.

The address, the API token and TLS come from flags or the environment as
:mod:`tgbroadcast_client.cli_connection` says; the token is sent in the call metadata only:
it never appears in the output. ``tgbroadcast bots`` (:mod:`tgbroadcast_client.cli_bots`)
manages the bots themselves.

``--watch`` follows the broadcast until it ends: a live progress bar on a terminal, plain
progress lines otherwise (one per status change and per tenth of the recipients), then a
summary — status, sent, failed by outcome, duration.

Exit codes: 0 sent (with ``--watch``: completed); 1 the service refused or failed the call
(the message says why, with every offending field); 2 bad command line; 3 the broadcast
ended failed or cancelled; 130 interrupted (the broadcast goes on).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Final, Protocol, TextIO

import grpc

from tgbroadcast.v1 import broadcast_pb2 as pb
from tgbroadcast_client._client import BroadcastClient
from tgbroadcast_client._errors import BroadcastClientError
from tgbroadcast_client._requests import (
    MessageFields,
    enum_name,
    enum_names,
    media_type_value,
    message_request,
)
from tgbroadcast_client.cli_connection import (
    DEFAULT_TARGET,
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    TOKEN_VARIABLES,
    add_connection_arguments,
    credentials_of,
    report_error,
    token_from,
)

__all__ = [
    "DEFAULT_TARGET",
    "EXIT_BROADCAST_FAILED",
    "EXIT_ERROR",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "TOKEN_VARIABLES",
    "main",
    "send",
]

EXIT_BROADCAST_FAILED = 3


def main(
    argv: Sequence[str] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    """Runs ``tgbroadcast send`` with ``argv`` (the arguments after ``send``)."""
    environ = os.environ if environ is None else environ
    out = sys.stdout if stdout is None else stdout
    err = sys.stderr if stderr is None else stderr
    parser = _parser(environ)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse has printed the usage and the problem
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    token = args.token or token_from(environ)
    if not token:
        print("tgbroadcast send: no API token: pass --token or set TGBROADCAST_TOKEN", file=err)
        return EXIT_USAGE
    try:
        request = _request(args)
        credentials = credentials_of(args)
    except (OSError, ValueError) as exc:
        print(f"tgbroadcast send: {exc}", file=err)
        return EXIT_USAGE
    try:
        return asyncio.run(
            send(
                args.target,
                token,
                request,
                watch=args.watch,
                credentials=credentials,
                stdout=out,
                stderr=err,
            )
        )
    except KeyboardInterrupt:
        print("interrupted (a broadcast already sent goes on)", file=err)
        return EXIT_INTERRUPTED


def _parser(environ: Mapping[str, str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tgbroadcast send",
        description="Send a broadcast through the service's gRPC API.",
    )
    add_connection_arguments(parser, environ)
    parser.add_argument(
        "--bot",
        default=environ.get("TGBROADCAST_BOT", ""),
        metavar="NAME",
        help="the bot that sends it (default: $TGBROADCAST_BOT, else the token's only bot, "
        "else default)",
    )
    parser.add_argument("--message", default="", help="the text, or the caption of media")
    media_types = enum_names("MediaType")
    parser.add_argument(
        "--media-type",
        default="",
        choices=media_types,
        metavar="TYPE",
        help=f"one of {', '.join(media_types)} (default: text)",
    )
    media = parser.add_mutually_exclusive_group()
    media.add_argument("--media-url", default="", help="an http(s) URL or a file_id")
    media.add_argument("--media-file", type=Path, help="upload this file as the media")
    parser.add_argument(
        "--parse-mode",
        default="",
        type=_parse_mode,
        metavar="MODE",
        help="html or markdown_v2 (Telegram's HTML / MarkdownV2 too); default: plain text",
    )
    parser.add_argument(
        "--source",
        type=_source,
        default=None,
        metavar="CHAT_ID:MESSAGE_ID",
        help="for copy and forward: the message to send (--source=-100123:45 for a channel)",
    )
    album = parser.add_mutually_exclusive_group()
    album.add_argument(
        "--album-item",
        type=_album_item,
        action="append",
        default=[],
        metavar="TYPE:URL_OR_FILE_ID[:CAPTION]",
        help="for album: one item (repeat for each, 2-10)",
    )
    album.add_argument(
        "--album-file",
        type=Path,
        default=None,
        metavar="FILE",
        help="for album: a JSON array of items, as in the REST body's album",
    )
    audience = parser.add_mutually_exclusive_group(required=True)
    audience.add_argument(
        "--user-id",
        type=int,
        action="extend",
        nargs="+",
        default=[],
        metavar="N",
        help="recipients' chat ids (repeatable)",
    )
    audience.add_argument("--all-users", action="store_true", help="every active user")
    audience.add_argument(
        "--tag",
        action="extend",
        nargs="+",
        default=[],
        metavar="T",
        help="active users with any of these tags",
    )
    parser.add_argument(
        "--paid", action="store_true", help="Telegram's paid broadcasts (costs Stars)"
    )
    parser.add_argument("--idempotency-key", default="", help="makes a retry safe")
    parser.add_argument(
        "--send-at",
        type=_timestamp,
        default=None,
        metavar="TIME",
        help="start at this RFC 3339 time (2030-01-01T09:00:00Z) instead of now",
    )
    parser.add_argument("--silent", action="store_true", help="deliver without notification")
    parser.add_argument(
        "--watch", action="store_true", help="follow the broadcast and print a summary"
    )
    return parser


def _timestamp(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an RFC 3339 time: {text!r}") from None
    if value.tzinfo is None:
        raise argparse.ArgumentTypeError(f"needs a time zone (e.g. Z): {text!r}")
    return value


_PARSE_MODES: Final = {
    "": "",
    "html": "html",
    "markdown_v2": "markdown_v2",
    "markdownv2": "markdown_v2",
}
"""Every spelling of a parse mode, case-folded, to ours (``""`` is plain text)."""
_NEEDS_MEDIA: Final = frozenset(enum_names("MediaType")) - {"text", "copy", "forward", "album"}
_ALBUM_KEYS: Final = frozenset({"media_type", "media_url", "caption", "has_spoiler"})


def _parse_mode(text: str) -> str:
    mode = _PARSE_MODES.get(text.strip().casefold())
    if mode is None:
        raise argparse.ArgumentTypeError(
            f"unknown parse mode {text!r}: html or markdown_v2 (or HTML, MarkdownV2)"
        )
    return mode


def _source(text: str) -> pb.MessageRef:
    chat, sep, message = text.rpartition(":")
    try:
        chat_id, message_id = int(chat), int(message)
    except ValueError:
        chat_id = message_id = 0
    if not sep or not chat_id or message_id <= 0:
        raise argparse.ArgumentTypeError(
            f"not CHAT_ID:MESSAGE_ID (two whole numbers, the message id positive): {text!r}"
        )
    return pb.MessageRef(from_chat_id=chat_id, message_id=message_id)


def _album_item(text: str) -> pb.AlbumItem:
    """``TYPE:URL_OR_FILE_ID[:CAPTION]``: for a URL, the caption follows the first ``:`` after
    its path begins, so a port (``host:8443``) stays in the URL."""
    kind, _, rest = text.partition(":")
    path_at = 0
    for scheme in ("https://", "http://"):
        if rest.lower().startswith(scheme):
            slash = rest.find("/", len(scheme))
            path_at = len(rest) if slash < 0 else slash
    colon = rest.find(":", path_at)
    reference, caption = (rest, "") if colon < 0 else (rest[:colon], rest[colon + 1 :])
    if not kind or not reference:
        raise argparse.ArgumentTypeError(f"not TYPE:URL_OR_FILE_ID[:CAPTION]: {text!r}")
    try:
        media_type = media_type_value(kind)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"unknown media type {kind!r} in {text!r}; one of {', '.join(_ALBUM_TYPES)}"
        ) from None
    return pb.AlbumItem(media_type=media_type, media_url=reference, caption=caption)


_ALBUM_TYPES: Final = ("photo", "video", "document", "audio")


def _album_from_file(path: Path) -> list[pb.AlbumItem]:
    """The items of an ``--album-file``; ``ValueError`` naming the file and the bad item."""
    try:
        data: Any = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"--album-file {path}: not JSON: {exc}") from None
    if not isinstance(data, list):
        raise ValueError(f"--album-file {path}: must be a JSON array of items")
    items: list[pb.AlbumItem] = []
    for index, entry in enumerate(data):
        where = f"--album-file {path}: item [{index}]"
        if not isinstance(entry, dict):
            raise ValueError(f"{where} must be an object")
        unknown = sorted(set(entry) - _ALBUM_KEYS)
        if unknown:
            raise ValueError(f"{where}: unknown field {unknown[0]!r}")
        strings = {k: entry.get(k, "") for k in ("media_type", "media_url", "caption")}
        if not all(isinstance(v, str) for v in strings.values()):
            raise ValueError(f"{where}: media_type, media_url and caption must be strings")
        if not isinstance(entry.get("has_spoiler", False), bool):
            raise ValueError(f"{where}: has_spoiler must be true or false")
        if not strings["media_type"] or not strings["media_url"]:
            raise ValueError(f"{where}: needs media_type and media_url")
        try:
            media_type = media_type_value(strings["media_type"])
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None
        items.append(
            pb.AlbumItem(
                media_type=media_type,
                media_url=strings["media_url"],
                caption=strings["caption"],
                has_spoiler=entry.get("has_spoiler", False),
            )
        )
    return items


def _check_kind(args: argparse.Namespace, album: list[pb.AlbumItem]) -> None:
    """What the message's kind needs and refuses, as usage errors (``ValueError``)."""
    kind = args.media_type or "text"
    has_media = bool(args.media_url) or args.media_file is not None
    if kind in ("copy", "forward"):
        if args.source is None:
            raise ValueError(f"--media-type {kind} needs --source CHAT_ID:MESSAGE_ID")
    elif args.source is not None:
        raise ValueError(f"--source is only for --media-type copy or forward, not {kind}")
    if kind == "album":
        if not album:
            raise ValueError("--media-type album needs --album-item (2-10 times) or --album-file")
    elif album:
        raise ValueError(
            f"--album-item and --album-file are only for --media-type album, not {kind}"
        )
    if kind in _NEEDS_MEDIA and not has_media:
        raise ValueError(f"--media-type {kind} needs --media-url or --media-file")
    if kind not in _NEEDS_MEDIA and has_media:
        raise ValueError(f"--media-url and --media-file are not for --media-type {kind}")


def _request(args: argparse.Namespace) -> pb.SendMessageRequest:
    if args.media_type == "" and (args.album_item or args.album_file is not None):
        args.media_type = "album"
    album: list[pb.AlbumItem] = list(args.album_item)
    if args.album_file is not None:
        album = _album_from_file(args.album_file)
    _check_kind(args, album)
    media_data = b""
    media_filename = ""
    if args.media_file is not None:
        media_data = args.media_file.read_bytes()
        media_filename = args.media_file.name
    fields: MessageFields = {
        "user_ids": args.user_id,
        "all_users": args.all_users,
        "tags": args.tag,
        "media_type": args.media_type,
        "media_url": args.media_url,
        "media_data": media_data,
        "media_filename": media_filename,
        "parse_mode": args.parse_mode,
        "album": album,
        "source": args.source,
        "allow_paid_broadcast": args.paid,
        "idempotency_key": args.idempotency_key,
        "disable_notification": args.silent,
        "send_at": args.send_at,
        "bot": args.bot,
    }
    return message_request(args.message, **fields)


async def send(
    target: str,
    token: str,
    request: pb.SendMessageRequest,
    *,
    watch: bool,
    secure: bool = False,
    credentials: grpc.ChannelCredentials | None = None,
    stdout: TextIO,
    stderr: TextIO,
    terminal: bool | None = None,
) -> int:
    """Sends ``request``; with ``watch``, follows it and prints the summary. The exit code.

    ``secure`` connects with TLS and the system's roots, ``credentials`` with these."""
    started = time.monotonic()
    try:
        async with BroadcastClient(target, token, secure=secure, credentials=credentials) as client:
            sent = await client.send_request(request)
            replayed = " (replayed)" if sent.replayed else ""
            print(
                f"broadcast {sent.broadcast_id}: {enum_name('BroadcastStatus', sent.status)}, "
                f"{sent.total} recipients{replayed}",
                file=stdout,
                flush=True,
            )
            if not watch:
                return EXIT_OK
            view = _progress_view(stdout, terminal)
            try:
                # The view needs only the counters: as many outcomes to a message as the
                # server has ready (a big broadcast is a few messages a second, not thousands).
                async for update in client.watch(sent.broadcast_id, max_batch=1000):
                    view.update(update.progress)
            finally:
                view.close()
            broadcast = await client.get(sent.broadcast_id)
    except BroadcastClientError as exc:
        return report_error("tgbroadcast send", exc, stderr)
    _print_summary(broadcast, time.monotonic() - started, stdout)
    if broadcast.status == pb.BROADCAST_STATUS_COMPLETED:
        return EXIT_OK
    return EXIT_BROADCAST_FAILED


def _print_summary(broadcast: pb.Broadcast, elapsed: float, out: TextIO) -> None:
    """``broadcast 7 completed: total=5 sent=4 failed=1``, the failures by outcome, the
    duration (the server's, from start to finish, when it has both)."""
    status = enum_name("BroadcastStatus", broadcast.status)
    print(
        f"broadcast {broadcast.broadcast_id} {status}: total={broadcast.total} "
        f"sent={broadcast.sent} failed={broadcast.failed} pending={broadcast.pending}",
        file=out,
    )
    for outcome, count in sorted(broadcast.outcome_counts.items()):
        if outcome != "sent" and count:
            print(f"  failed {outcome}: {count}", file=out)
    if broadcast.error:
        print(f"  error: {broadcast.error}", file=out)
    start = broadcast.started_at if broadcast.HasField("started_at") else broadcast.created_at
    if broadcast.HasField("finished_at") and start.ToNanoseconds():
        elapsed = (broadcast.finished_at.ToNanoseconds() - start.ToNanoseconds()) / 1e9
    print(f"  duration: {elapsed:.2f}s", file=out, flush=True)


class ProgressView(Protocol):
    def update(self, progress: pb.Progress) -> None: ...
    def close(self) -> None: ...


def _progress_view(out: TextIO, terminal: bool | None) -> ProgressView:
    if terminal is None:
        terminal = out.isatty()
    return RichProgress(out) if terminal else PlainProgress(out)


class PlainProgress:
    """Progress as lines, for logs and pipes: a line when the status changes and each time
    the share of recipients done passes another tenth."""

    def __init__(self, out: TextIO) -> None:
        self._out = out
        self._status = -1
        self._tenths = -1

    def update(self, progress: pb.Progress) -> None:
        done = progress.sent + progress.failed
        tenths = 10 * done // progress.total if progress.total else 10
        if progress.status == self._status and tenths == self._tenths:
            return
        self._status, self._tenths = progress.status, tenths
        print(
            f"{enum_name('BroadcastStatus', progress.status)}: {done}/{progress.total} done "
            f"(sent {progress.sent}, failed {progress.failed})",
            file=self._out,
            flush=True,
        )

    def close(self) -> None:
        pass


class RichProgress:
    """A live progress bar on a terminal (rich)."""

    def __init__(self, out: TextIO) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        self._progress = Progress(
            TextColumn("{task.description:>9}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("sent {task.fields[sent]}, failed {task.fields[failed]}"),
            TimeElapsedColumn(),
            console=Console(file=out, force_terminal=True),
        )
        self._task = self._progress.add_task("queued", total=None, sent=0, failed=0)
        self._progress.start()

    def update(self, progress: pb.Progress) -> None:
        self._progress.update(
            self._task,
            description=enum_name("BroadcastStatus", progress.status),
            total=progress.total,
            completed=progress.sent + progress.failed,
            sent=progress.sent,
            failed=progress.failed,
        )

    def close(self) -> None:
        self._progress.stop()
