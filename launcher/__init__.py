"""The ``tgbroadcast`` command, and the one place that composes the parts into processes.

* :mod:`.cli` — the entry point (``run``, ``server``, ``worker``, ``migrate``, ``send``);
  the only code that installs signal handlers and logging.
* :mod:`.app` — backends (store, queue, embedded NATS), the API, background loops and
  workers, composed as async context managers.
* :mod:`.natsserver` — the embedded ``nats-server`` child process.
* :mod:`.heap` — the garbage collector paused while a service starts, then frozen start-up.
* :mod:`.demo` — ``make demo``: the whole pipeline against the simulator.

May import anything in ``tgbroadcast``; nothing imports it but tests.
"""
