"""The log set-up of the entry points (:mod:`tgbroadcast.core.logs`): structured fields, and
every token redacted wherever it appears.
"""

from __future__ import annotations

import io
import json
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.cluster import cluster, environ
from tests.fixtures.environ import API_TOKEN as SUITE_API_TOKEN
from tests.fixtures.stack import Backend, on_sqlite
from tests.fixtures.telegram import BOT_TOKEN as SUITE_BOT_TOKEN
from tests.fixtures.watching import assert_watch_complete
from tgbroadcast.core.config import LogSettings, load_settings
from tgbroadcast.core.domain.errors import ConfigError
from tgbroadcast.core.logs import FieldsFormatter, JsonFormatter, RedactingFilter, redact
from tgbroadcast.simulator import ChatState, Fault, Simulator

BOT_TOKEN = "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw1"
API_TOKEN = "api-token-0123456789-secret"


def test_redact_masks_bot_tokens_in_urls_and_bare() -> None:
    url = f"https://api.telegram.org/bot{BOT_TOKEN}/sendMessage"
    assert redact(url) == "https://api.telegram.org/bot123456789:***/sendMessage"
    assert redact(f"token={BOT_TOKEN}") == "token=123456789:***"
    assert redact(f"Bearer {API_TOKEN}", [API_TOKEN]) == "Bearer ***"


def _logger(stream: io.StringIO, formatter: logging.Formatter) -> logging.Logger:
    """A logger writing to ``stream`` the way :func:`configure_logging` sets up stderr."""
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    handler.addFilter(RedactingFilter([API_TOKEN]))
    name = "test.logs.json" if isinstance(formatter, JsonFormatter) else "test.logs"
    logger = logging.getLogger(name)
    logger.handlers = [handler]
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    return logger


@pytest.fixture
def captured() -> tuple[logging.Logger, io.StringIO]:
    stream = io.StringIO()
    return _logger(stream, FieldsFormatter()), stream


def test_filter_covers_message_args_fields_and_tracebacks(
    captured: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = captured
    logger.info("calling %s", f"https://x/bot{BOT_TOKEN}/getMe", extra={"auth": API_TOKEN})
    try:
        raise RuntimeError(f"failed https://x/bot{BOT_TOKEN}/getMe")
    except RuntimeError:
        logger.exception("boom", extra={"broadcast_id": 7})
    text = stream.getvalue()
    assert "AAHdqTcv" not in text
    assert API_TOKEN not in text
    assert "calling https://x/bot123456789:***/getMe auth=***" in text
    assert "boom broadcast_id=7" in text
    assert "RuntimeError: failed https://x/bot123456789:***/getMe" in text


class _Target:
    """A field value that is not a string: logged as its (redacted) ``str()``."""

    def __str__(self) -> str:
        return f"https://api.telegram.org/bot{BOT_TOKEN}/sendMessage"


def _json_lines(text: str) -> list[dict[str, Any]]:
    """Every line of ``text`` as a JSON object (strict: no NaN)."""

    def refuse(constant: str) -> None:
        raise ValueError(f"not JSON: {constant}")

    entries = []
    for line in text.splitlines():
        entry = json.loads(line, parse_constant=refuse)
        assert isinstance(entry, dict), line
        entries.append(entry)
    return entries


def test_json_lines_carry_time_level_logger_message_and_fields() -> None:
    stream = io.StringIO()
    logger = _logger(stream, JsonFormatter())
    logger.info(
        "sent to %d of %s",
        3,
        "them",
        extra={
            "broadcast_id": 7,
            "user_id": 42,
            "job": "j.7.42.3.0123456789abcdef",
            "attempt": 2,
            "paid": False,
            "time": "mine",  # a field named like a key of the line itself
            "ratio": float("nan"),
            "batch": [1, 2],
        },
    )
    (entry,) = _json_lines(stream.getvalue())
    moment = datetime.fromisoformat(entry.pop("time"))
    assert moment.utcoffset() == timedelta(0)
    assert abs(datetime.now(UTC) - moment) < timedelta(minutes=5)
    assert entry == {
        "level": "INFO",
        "logger": "test.logs.json",
        "message": "sent to 3 of them",
        "broadcast_id": 7,
        "user_id": 42,
        "job": "j.7.42.3.0123456789abcdef",
        "attempt": 2,
        "paid": False,
        "field_time": "mine",
        "ratio": "nan",
        "batch": [1, 2],
    }


def test_json_lines_are_redacted_everywhere() -> None:
    """A bot token and an API token in the message, an argument, a field (a string, a list,
    a mapping and an object's ``str()``) and an exception's text: masked in every one."""
    stream = io.StringIO()
    logger = _logger(stream, JsonFormatter())
    logger.warning(
        f"token {API_TOKEN} for %s",
        f"https://x/bot{BOT_TOKEN}/getMe",
        extra={
            "auth": f"Bearer {API_TOKEN}",
            "tokens": [BOT_TOKEN, API_TOKEN],
            "headers": {"Authorization": API_TOKEN, API_TOKEN: 1},
            "target": _Target(),
        },
    )
    try:
        raise RuntimeError(f"failed https://x/bot{BOT_TOKEN}/getMe with {API_TOKEN}")
    except RuntimeError:
        logger.exception("boom", extra={"broadcast_id": 7, "user_id": 42})
    text = stream.getvalue()
    assert "AAHdqTcv" not in text
    assert API_TOKEN not in text
    warning, error = _json_lines(text)
    assert warning["message"] == "token *** for https://x/bot123456789:***/getMe"
    assert warning["auth"] == "Bearer ***"
    assert warning["tokens"] == ["123456789:***", "***"]
    assert warning["headers"] == {"Authorization": "***", "***": 1}
    assert warning["target"] == "https://api.telegram.org/bot123456789:***/sendMessage"
    assert error["level"] == "ERROR"
    assert (error["broadcast_id"], error["user_id"]) == (7, 42)
    assert error["exception"].startswith("Traceback (most recent call last):")
    assert error["exception"].endswith(
        "RuntimeError: failed https://x/bot123456789:***/getMe with ***"
    )


def test_a_second_handler_sees_fields_set_after_the_first_filter() -> None:
    """The filter leaves a record's redacted fields for the formatters; a field another
    filter sets afterwards (here on a second handler, before its own redaction) is still
    found, redacted, and the first handler's line is as it was."""
    first, second = io.StringIO(), io.StringIO()
    logger = _logger(first, FieldsFormatter())
    tagging = logging.StreamHandler(second)
    tagging.setFormatter(JsonFormatter())

    def tag(record: logging.LogRecord) -> bool:
        record.request = f"from {API_TOKEN}"
        return True

    tagging.addFilter(tag)
    tagging.addFilter(RedactingFilter([API_TOKEN]))
    logger.addHandler(tagging)
    logger.info("sent", extra={"broadcast_id": 7, "auth": f"Bearer {API_TOKEN}"})
    assert first.getvalue().rstrip().endswith("sent broadcast_id=7 auth=Bearer ***")
    (line,) = _json_lines(second.getvalue())
    assert (line["broadcast_id"], line["auth"], line["request"]) == (7, "Bearer ***", "from ***")


def test_log_settings_from_the_file_and_the_environment(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("log:\n  format: json\n  level: warning\n", encoding="utf-8")
    assert load_settings(config, environ={}).log == LogSettings(level="WARNING", format="json")
    assert load_settings(config, environ={"TGB_LOG_FORMAT": "TEXT"}).log.format == "text"
    assert load_settings(environ={}, base_dir=tmp_path).log == LogSettings()
    with pytest.raises(ConfigError, match=r"log\.format"):
        load_settings(environ={"TGB_LOG_FORMAT": "xml"}, base_dir=tmp_path)
    with pytest.raises(ConfigError, match=r"log\.level"):
        load_settings(environ={"TGB_LOG_LEVEL": "loud"}, base_dir=tmp_path)


@on_sqlite
async def test_processes_write_json_lines_only(backend: Backend, tmp_path: Path) -> None:
    """A server and a worker run with ``TGB_LOG_FORMAT=json`` (the worker at DEBUG, so that
    every library's records go through the handler too): every line either wrote is a JSON
    object; the worker's retry and refusal carry the broadcast and the recipient, the server's
    access log the route, method, status, duration and client; no token anywhere."""
    async with Simulator() as simulator:
        simulator.faults.inject(Fault.server_error(), times=1, method="sendMessage", chat_id=2)
        simulator.chats.declare(3, ChatState.BLOCKED)
        env = environ(
            backend,
            simulator,
            TGB_LOG_FORMAT="json",
            TGB_WORKER_BACKOFF_BASE="0.01",
        )
        async with cluster(env, tmp_path) as services:
            server = await services.server()
            services.env["TGB_LOG_LEVEL"] = "DEBUG"
            worker = await services.worker()
            recipients = [1, 2, 3]
            broadcast_id = await services.send(recipients)
            assert_watch_complete(await services.watch(broadcast_id), set(recipients))
            assert await worker.stop() == 0
            assert await server.stop() == 0
    for process in (server, worker):
        assert SUITE_BOT_TOKEN.partition(":")[2] not in process.log()
        assert SUITE_API_TOKEN not in process.log()
    worker_lines = _json_lines(worker.log())
    server_lines = _json_lines(server.log())
    for entry in worker_lines + server_lines:
        assert {"time", "level", "logger", "message"} <= entry.keys(), entry
        assert datetime.fromisoformat(entry["time"]).utcoffset() == timedelta(0)
    assert any(
        e["level"] == "DEBUG" and e["logger"] != "tgbroadcast.worker.delivery" for e in worker_lines
    )

    def about(user_id: int, message: str) -> dict[str, Any]:
        (entry,) = [
            e
            for e in worker_lines
            if e["message"] == message
            and e.get("broadcast_id") == broadcast_id
            and e.get("user_id") == user_id
        ]
        return entry

    assert about(2, "transient send failure; retrying")["attempt"] == 1
    assert about(3, "recipient refused by Telegram")["outcome"] == "blocked"
    (send,) = [
        e
        for e in server_lines
        if e["logger"] == "tgbroadcast.access" and e.get("route") == "/send-message"
    ]
    assert (send["method"], send["status"], send["client"]) == ("POST", 202, "127.0.0.1")
    assert isinstance(send["duration_ms"], float)
