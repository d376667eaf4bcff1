"""Bots as things the service holds: the configured ones and those created through the API.

* :mod:`.directory` — :class:`~.directory.BotDirectory`: every bot the service may send
  with right now (``telegram.token``, ``bots:``, and the stored ones), refreshed from the
  database; what requests, workers and metrics resolve a bot name with.
* :mod:`.sealing` — bot tokens sealed at rest with keys derived from ``server.secret_key``
  (Fernet; the first key seals, every key opens) and their SHA-256 fingerprints.
* :mod:`.telegram` — checking a token with Telegram's ``getMe`` before it is stored.
* :mod:`.service` — :class:`~.service.BotService`: create, list, get and delete bots for
  both API transports.

No token ever leaves this package in clear: not in an error, a log line or a row.

May import: domain, config, store.
"""
