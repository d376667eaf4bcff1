"""What a bot developer would write instead of running the service, as benchmark peers.

Each peer sends one text message to each recipient through a Bot API server (the simulator)
the way the libraries' own documentation and examples do it:

* ``aiogram-sleep`` — a plain aiogram loop: one message at a time and ``asyncio.sleep(1/rate)``
  after each; an error (a 429 included) loses that recipient.
* ``aiogram-retry`` — aiogram with ``concurrency`` sends in flight and no pacing; a 429
  (``TelegramRetryAfter``) waits ``retry_after`` and sends again. With flood control off it is
  the cheapest way aiogram can send: the floor the service is compared with.
* ``ptb`` — python-telegram-bot's ``ExtBot`` with ``AIORateLimiter(overall_max_rate=rate)``
  (which throttles paid broadcasts at Telegram's 1000/s itself) and 5 retries after a 429,
  ``concurrency`` sends in flight.

Run as ``python -m bench.peers aiogram|ptb --api-url URL --token TOKEN``. The process imports
its library, opens its bot and prints ``ready``; then for each JSON line on stdin
(``{"kind", "rate", "concurrency", "first", "count", "paid"}``) it sends to the recipients
``first .. first + count - 1`` and prints one JSON line: ``started_at`` (wall clock, its
first send), ``finished_at``, ``sent``, ``failed``, ``retried``. A run always starts from
its first recipient: a peer keeps no state, so one killed and started again sends
everything again.
"""
