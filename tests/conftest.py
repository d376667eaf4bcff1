"""Fixtures shared by the suite; each lives in ``tests/fixtures``.

aiogram is imported first, as ``tgbroadcast worker`` imports it (each model built at its first
use: :mod:`tests.fixtures.worker_aiogram`), so the suite's sends go through the models a worker
has, not an eager import's."""

import tests.fixtures.worker_aiogram  # noqa: F401 - first: before anything imports aiogram
from tests.fixtures.databases import database_url, store
from tests.fixtures.nats import nats_url, queue_prefix
from tests.fixtures.refusals import small_stack
from tests.fixtures.stack import backend, sqlite_stack, stack
from tests.fixtures.telegram import bot, simulator
from tests.fixtures.tls import pki

__all__ = [
    "backend",
    "bot",
    "database_url",
    "nats_url",
    "pki",
    "queue_prefix",
    "simulator",
    "small_stack",
    "sqlite_stack",
    "stack",
    "store",
]
