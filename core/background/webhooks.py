"""The completion webhook: a signed JSON summary POSTed to a broadcast's ``callback_url``
when it reaches a final status (completed, failed or cancelled).

Guarantees:

* **At least once.** The summary is POSTed until the receiver answers 2xx; the state lives in
  SQL (``broadcasts.callback_state``, see :mod:`tgbroadcast.core.store.callbacks`), so a server
  that stops or crashes mid-way leaves it to the next server (or the next start) once its
  lease lapses — a receiver may therefore see one summary more than once and should dedupe
  by ``broadcast_id``.
* **One sender at a time.** Each server's :class:`WebhookNotifier` claims a due webhook for
  one attempt with a conditional update; several servers share the work without sending
  one twice at once.
* **Retries.** Network errors, timeouts (``webhook.timeout``), 408, 429 and 5xx answers are
  retried with exponential backoff and full jitter — retry *n* waits a random time up to
  ``min(backoff_cap, backoff_base * 2**n)`` — up to ``webhook.max_attempts`` attempts in all;
  then the webhook is ``failed``. Any other answer (3xx: redirects are not followed, 4xx) is
  final at once: ``failed``. A webhook waiting for its retry is back in SQL with its due
  time: it holds none of a server's :data:`DEFAULT_CONCURRENCY` slots, and any server may
  make the retry.
* **Signed, with the time.** ``X-Tgbroadcast-Timestamp`` is the Unix time of the attempt and
  ``X-Tgbroadcast-Signature: sha256=<hex HMAC-SHA256 of "<timestamp>.<body>", keyed with
  webhook.secret>`` (Stripe's scheme): a receiver that also refuses timestamps older than a
  few minutes (:func:`verify`) cannot be fed a recorded request again later. The secret
  never appears in a log line or an error; URLs are logged without path, query or
  credentials.
* **Never inside.** Unless ``webhook.allow_private_networks``, a ``callback_url`` may reach
  public addresses only (:mod:`tgbroadcast.core.rules.addresses`). Its host is resolved once
  per connection by a :class:`CheckedResolver`, which checks *every* address it resolves to
  and hands the connection only those — it connects to the address that was checked, so a
  name that answers differently the next time (DNS rebinding) gains nothing; a host spelled
  as an address is checked as such. One internal address refuses the whole host. A refused
  destination fails the webhook at once (``failed``, not retried), logged at WARNING with the
  redacted URL and the reason. Redirects are never followed: a 3xx answer is final
  (``failed``). No proxy from the environment is used.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import random
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from types import TracebackType
from typing import Any, Final
from urllib.parse import urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver
from yarl import URL

from tgbroadcast.core.config import WebhookSettings
from tgbroadcast.core.domain.errors import BACKEND_UNAVAILABLE
from tgbroadcast.core.domain.model import Broadcast, DeliveryState
from tgbroadcast.core.outbound import CheckedResolver, RefusedDestination, allow_all
from tgbroadcast.core.rules import addresses
from tgbroadcast.core.store import Store
from tgbroadcast.core.store.callbacks import DELIVERED, FAILED, CallbackClaim
from tgbroadcast.core.tasks import cancel_and_wait, wait_event

logger = logging.getLogger(__name__)

SIGNATURE_HEADER: Final = "X-Tgbroadcast-Signature"
TIMESTAMP_HEADER: Final = "X-Tgbroadcast-Timestamp"
USER_AGENT: Final = "tgbroadcast-webhook/1"
LEASE_MARGIN: Final = 30.0
"""Seconds a lease outlasts the one attempt it covers."""
DEFAULT_CONCURRENCY: Final = 16
"""Webhooks one server delivers at once: a slow receiver does not hold up the others."""


DEFAULT_TOLERANCE: Final = 300.0
"""Seconds a receiver should accept a signed timestamp away from its own clock."""


def sign(body: bytes, secret: str, timestamp: int) -> str:
    """The ``X-Tgbroadcast-Signature`` value of ``body`` sent at ``timestamp`` (Unix
    seconds, the ``X-Tgbroadcast-Timestamp`` header): ``sha256=<hex HMAC-SHA256 of
    "<timestamp>.<body>">``."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"sha256={digest.hexdigest()}"


def verify(
    body: bytes,
    signature: str,
    timestamp: str,
    secret: str,
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    now: float | None = None,
) -> bool:
    """Whether ``signature`` and ``timestamp`` (the two headers' values) sign ``body`` with
    ``secret``, at most ``tolerance`` seconds from ``now`` (default: the current time); the
    signature is compared in constant time. A stale or future timestamp is refused: a
    recorded request cannot be replayed later."""
    try:
        sent = int(timestamp.strip())
    except ValueError:
        return False
    current = time.time() if now is None else now
    if abs(current - sent) > tolerance:
        return False
    return hmac.compare_digest(sign(body, secret, sent), signature.strip())


def summary(
    broadcast: Broadcast,
    outcome_counts: Mapping[DeliveryState, int],
    variant_counts: Mapping[str, Mapping[DeliveryState, int]] | None = None,
) -> dict[str, Any]:
    """The webhook's JSON object: the REST API's field names and spellings; with variants,
    ``variant_counts``: each variant's recipients per outcome."""
    document: dict[str, Any] = {
        "broadcast_id": broadcast.id,
        "bot": broadcast.bot,
        "status": broadcast.status.value,
        "total": broadcast.total,
        "sent": broadcast.sent,
        "failed": broadcast.failed,
        "pending": broadcast.pending,
        "outcome_counts": {state.value: n for state, n in sorted(outcome_counts.items())},
        "error": broadcast.error,
        "created_at": _time(broadcast.created_at),
        "finished_at": _time(broadcast.finished_at),
    }
    if broadcast.variants:
        document["variant_counts"] = {
            v.name: {
                state.value: n
                for state, n in sorted((variant_counts or {}).get(v.name, {}).items())
            }
            for v in broadcast.variants
        }
    return document


def encode(document: Mapping[str, Any]) -> bytes:
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()


def _time(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat().replace("+00:00", "Z")


def redact(url: str) -> str:
    """``scheme://host[:port]`` of ``url``: paths and queries may carry receivers' secrets."""
    try:
        parts = urlsplit(url)
        port = f":{parts.port}" if parts.port else ""
        return f"{parts.scheme}://{parts.hostname}{port}"
    except ValueError:
        return "<invalid url>"


class _Answer:
    """What one attempt came to: ``delivered``, or why not and whether to try again."""

    __slots__ = ("delivered", "reason", "retryable")

    def __init__(self, *, delivered: bool = False, retryable: bool = False, reason: str = ""):
        self.delivered = delivered
        self.retryable = retryable
        self.reason = reason


class WebhookNotifier:
    """Delivers due webhooks from this server process; an async context manager.

    It looks for due webhooks every ``poll_interval`` seconds and at once after
    :meth:`wake`. Leaving the context stops it: deliveries in hand are abandoned and made
    ``pending`` again, for the next server to deliver (at least once).
    """

    def __init__(
        self,
        *,
        store: Store,
        settings: WebhookSettings,
        concurrency: int = DEFAULT_CONCURRENCY,
        resolver: AbstractResolver | None = None,
        on_outcome: Callable[[str, str], None] | None = None,
    ) -> None:
        """``resolver``: how host names are resolved (default: the system's, in a thread);
        whatever it answers is checked by a :class:`CheckedResolver`. ``on_outcome``: told
        how each attempt ended — ``delivered``, ``retried`` (handed back for a retry) or
        ``failed`` (given up) — and the broadcast's bot, once it is settled in SQL (the
        metrics)."""
        if not settings.secret:
            raise ValueError("a webhook notifier needs webhook.secret")
        self._store = store
        self._settings = settings
        self._resolver = CheckedResolver(
            refusal=allow_all if settings.allow_private_networks else addresses.refusal,
            resolver=resolver,
        )
        self._concurrency = concurrency
        self._on_outcome = on_outcome
        self._wakeup = asyncio.Event()
        self._held: dict[int, CallbackClaim] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop_task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> WebhookNotifier:
        self._session = aiohttp.ClientSession(
            # Resolved per connection, so each is checked (no cache of unchecked answers).
            connector=aiohttp.TCPConnector(resolver=self._resolver, use_dns_cache=False),
            timeout=aiohttp.ClientTimeout(total=self._settings.timeout),
            headers={"User-Agent": USER_AGENT},
            trust_env=False,  # no proxy from the environment: it would do the resolving
        )
        self._loop_task = asyncio.create_task(self._run(), name="webhook-notifier")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await cancel_and_wait(self._loop_task, *self._tasks)
        for claim in list(self._held.values()):
            try:
                await self._store.release_callback(claim)
            except BACKEND_UNAVAILABLE as error:  # the lease lapses instead
                logger.warning(
                    "could not hand back a webhook",
                    extra={"broadcast_id": claim.broadcast_id, "error": type(error).__name__},
                )
        self._held.clear()
        if self._session is not None:
            await self._session.close()
        await self._resolver.close()

    def wake(self, broadcast_id: int | None = None) -> None:
        """Look for due webhooks now (a broadcast just ended)."""
        self._wakeup.set()

    async def _run(self) -> None:
        while True:
            try:
                while len(self._tasks) < self._concurrency:
                    claim = await self._store.claim_callback(lease_seconds=self._attempt_lease)
                    if claim is None:
                        break
                    self._held[claim.broadcast_id] = claim
                    task = asyncio.create_task(self._deliver(claim))
                    self._tasks.add(task)
                    task.add_done_callback(self._finished)
            except BACKEND_UNAVAILABLE as error:
                logger.warning(
                    "cannot look for due webhooks", extra={"error": type(error).__name__}
                )
            except Exception:  # never let one bad row stop every later webhook
                logger.exception("looking for due webhooks failed")
            await wait_event(self._wakeup, self._settings.poll_interval)
            self._wakeup.clear()

    def _finished(self, task: asyncio.Task[None]) -> None:
        """A slot is free: look for due webhooks at once."""
        self._tasks.discard(task)
        self._wakeup.set()

    @property
    def _attempt_lease(self) -> float:
        return self._settings.timeout + LEASE_MARGIN

    async def _deliver(self, claim: CallbackClaim) -> None:
        """One attempt: settle the webhook, or hand it back due at its retry time (the slot
        is free while it waits)."""
        broadcast_id = claim.broadcast_id
        target = redact(claim.url)
        attempt = claim.attempt
        try:
            broadcast = await self._store.get_broadcast(broadcast_id)
            counts = await self._store.outcome_counts(broadcast_id)
            by_variant = (
                await self._store.variant_counts(broadcast_id) if broadcast.variants else {}
            )
            body = encode(summary(broadcast, counts, by_variant))
            answer = await self._post(claim.url, body)
            if answer.delivered:
                await self._store.settle_callback(claim, DELIVERED)
                self._outcome("delivered", broadcast.bot)
                logger.info(
                    "webhook delivered",
                    extra={
                        "broadcast_id": broadcast_id,
                        "bot": broadcast.bot,
                        "url": target,
                        "attempt": attempt,
                    },
                )
            elif not answer.retryable or attempt >= self._settings.max_attempts:
                await self._store.settle_callback(claim, FAILED)
                self._outcome("failed", broadcast.bot)
                logger.warning(
                    "webhook failed",
                    extra={
                        "broadcast_id": broadcast_id,
                        "bot": broadcast.bot,
                        "url": target,
                        "attempt": attempt,
                        "reason": answer.reason,
                    },
                )
            else:
                wait = random.uniform(
                    0, min(self._settings.backoff_cap, self._settings.backoff_base * 2**attempt)
                )
                if await self._store.defer_callback(claim, delay_seconds=wait):
                    self._outcome("retried", broadcast.bot)
                    logger.info(
                        "webhook attempt failed; retrying",
                        extra={
                            "broadcast_id": broadcast_id,
                            "bot": broadcast.bot,
                            "url": target,
                            "attempt": attempt,
                            "reason": answer.reason,
                            "retry_in": round(wait, 3),
                        },
                    )
                else:
                    logger.warning(
                        "webhook claim lost to another server",
                        extra={"broadcast_id": broadcast_id, "attempt": attempt},
                    )
        except BACKEND_UNAVAILABLE as error:
            # The lease lapses and the webhook is claimed again.
            logger.warning(
                "webhook delivery interrupted by the database",
                extra={
                    "broadcast_id": broadcast_id,
                    "attempt": attempt,
                    "error": type(error).__name__,
                },
            )
        except Exception:
            logger.exception(
                "webhook delivery crashed", extra={"broadcast_id": broadcast_id, "attempt": attempt}
            )
        finally:
            # Cancelled: kept in _held, so that leaving the notifier hands it back.
            if not _cancelling():
                self._held.pop(broadcast_id, None)

    def _outcome(self, outcome: str, bot: str) -> None:
        if self._on_outcome is not None:
            self._on_outcome(outcome, bot)

    async def _post(self, url: str, body: bytes) -> _Answer:
        assert self._session is not None
        timestamp = int(time.time())
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: sign(body, self._settings.secret, timestamp),
            TIMESTAMP_HEADER: str(timestamp),
        }
        try:
            target = URL(url)
        except ValueError:
            return _Answer(reason="invalid URL")
        try:
            self._resolver.check_literal(target.raw_host or "")
            async with self._session.post(
                target, data=body, headers=headers, allow_redirects=False
            ) as response:
                status = response.status
        except RefusedDestination as refused:
            return _Answer(reason=f"destination refused: {refused}")
        except TimeoutError:
            return _Answer(retryable=True, reason="timeout")
        except aiohttp.InvalidURL:
            return _Answer(reason="invalid URL")
        except aiohttp.ClientError as error:
            if isinstance(cause := _cause(error), RefusedDestination):
                return _Answer(reason=f"destination refused: {cause}")
            return _Answer(retryable=True, reason=type(error).__name__)
        if 200 <= status < 300:
            return _Answer(delivered=True)
        if 300 <= status < 400:
            return _Answer(reason=f"HTTP {status} (redirects are not followed)")
        return _Answer(retryable=status in (408, 429) or status >= 500, reason=f"HTTP {status}")


def _cause(error: BaseException) -> BaseException | None:
    """The exception aiohttp wrapped (a resolver's, for a connection error)."""
    return getattr(error, "os_error", None) or error.__cause__


def _cancelling() -> bool:
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0
