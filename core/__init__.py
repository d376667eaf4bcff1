"""What the API and the workers share; nothing here knows a transport or a process.

* :mod:`~tgbroadcast.core.domain` — plain values, states and the error tree.
* :mod:`~tgbroadcast.core.rules` — pure request rules: validation, Telegram's content rules
  and formatting, personalization templates, idempotency, page tokens.
* :mod:`~tgbroadcast.core.store` — SQL, the source of truth (SQLite, PostgreSQL, MariaDB).
* :mod:`~tgbroadcast.core.queue` — NATS JetStream, the transport of jobs and outcome events.
* :mod:`~tgbroadcast.core.service` — the one core both API transports call.
* :mod:`~tgbroadcast.core.background` — loops that run beside the API: scheduled starts and
  completion webhooks.
* :mod:`~tgbroadcast.core.config`, :mod:`~tgbroadcast.core.logs`,
  :mod:`~tgbroadcast.core.metrics` — settings, log set-up and Prometheus metrics.
* :mod:`~tgbroadcast.core.tasks` — how an owner stops the background tasks it started.
* :mod:`~tgbroadcast.core.outbound` — the resolver that keeps requests to user-named URLs
  (webhooks, media the service fetches) off private networks.
* :mod:`~tgbroadcast.core.health` — readiness: the database, NATS and the drain, each check
  named and bounded in time.

Imports run one way: background → service → store, queue, rules → domain. Nothing in
``core`` imports ``tgbroadcast.server``, ``tgbroadcast.worker`` or ``tgbroadcast.launcher``
(``tests/test_architecture.py`` checks it).
"""
