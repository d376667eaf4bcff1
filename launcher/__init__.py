"""The ``tgbroadcast`` command, and the one place that composes the parts into processes.

* :mod:`.cli` — the entry point (``run``, ``server``, ``worker``, ``migrate``, ``send``);
  the only code that installs signal handlers and logging.
* :mod:`.app` — backends (store, queue, embedded NATS) and workers, and the whole service
  composed as async context managers.
* :mod:`.api` — the API's part (dispatcher, scheduler, the core behind gRPC and HTTP), loaded
  only by processes that serve it: a worker never imports gRPC's server or the REST app.
* :mod:`.shutdown`, :mod:`.probes` — the drain in order and its watchdog; a worker's health
  and metrics port.
* :mod:`.natsserver` — the embedded ``nats-server`` child process.
* :mod:`.heap` — the garbage collector paused while a service starts, then frozen start-up.
* :mod:`.demo` — ``make demo``: the whole pipeline against the simulator.

May import anything in ``tgbroadcast``; nothing imports it but tests.
"""
