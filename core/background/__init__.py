"""Loops that run beside the API, each an async context manager the launcher starts:

* :mod:`.scheduler` — starts scheduled broadcasts (``send_at``) on time.
* :mod:`.webhooks` — POSTs a signed summary to a finished broadcast's ``callback_url``.

May import: service, store, domain, config, tasks.
"""
