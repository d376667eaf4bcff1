"""Fixtures shared by the suite; each lives in ``tests/fixtures``."""

from tests.fixtures.databases import database_url
from tests.fixtures.nats import nats_url, queue_prefix
from tests.fixtures.stack import backend, stack
from tests.fixtures.telegram import bot, simulator

__all__ = ["backend", "bot", "database_url", "nats_url", "queue_prefix", "simulator", "stack"]
