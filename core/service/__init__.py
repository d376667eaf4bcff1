"""The one core both API transports call: gRPC and REST are thin adapters over
:class:`~.broadcasting.BroadcastingService`.

* :mod:`.broadcasting` — send, get, watch, users, previews.
* :mod:`.watching` — a watch's outcomes once each, with the cursors a reconnect resumes from.
* :mod:`.watch_updates` — what a watch streams (its updates) and the place each is made at.
* :mod:`.cursors` — those cursors: spelled, read, and a watch from now's floor in them.
* :mod:`.shared_reads` — one read of a broadcast's row for all the process's watchers of it.
* :mod:`.controls` — list, cancel, pause and resume broadcasts.
* :mod:`.dispatch` — fan-out: a stored broadcast becomes jobs on the queue, finished after a
  crash.
* :mod:`.quota` — ``server.max_pending_recipients``, checked as a broadcast is written.
* :mod:`.bot_access` — the bot a request acts for (known to the service) and the broadcasts
  a caller may see.
* :mod:`.reports`, :mod:`.user_import`, :mod:`.uploads` — delivery reports, CSV user imports,
  uploaded album items.

May import: domain, rules, store, queue, metrics, tasks.
"""
