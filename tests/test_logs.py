"""The log set-up of the entry points (:mod:`tgbroadcast.core.logs`): structured fields, and
every token redacted wherever it appears.
"""

from __future__ import annotations

import io
import logging

import pytest

from tgbroadcast.core.logs import FieldsFormatter, RedactingFilter, redact

BOT_TOKEN = "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw1"
API_TOKEN = "api-token-0123456789-secret"


def test_redact_masks_bot_tokens_in_urls_and_bare() -> None:
    url = f"https://api.telegram.org/bot{BOT_TOKEN}/sendMessage"
    assert redact(url) == "https://api.telegram.org/bot123456789:***/sendMessage"
    assert redact(f"token={BOT_TOKEN}") == "token=123456789:***"
    assert redact(f"Bearer {API_TOKEN}", [API_TOKEN]) == "Bearer ***"


@pytest.fixture
def captured() -> tuple[logging.Logger, io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(FieldsFormatter())
    handler.addFilter(RedactingFilter([API_TOKEN]))
    logger = logging.getLogger("test.logs")
    logger.handlers = [handler]
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    return logger, stream


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
