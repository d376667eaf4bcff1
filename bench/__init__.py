"""Benchmarks of the service, run by hand, never by ``make test``.

* ``python -m bench`` (``make bench``; ``--quick`` for a short look): the harness of issue 5.
  It runs the project's Telegram simulator, ``tgbroadcast server`` and ``tgbroadcast worker``
  processes and the peers (aiogram loops, python-telegram-bot) through nine scenarios, prints
  every raw number as a JSON line, and writes ``docs/benchmarks.md`` and ``docs/bench/*.png``.
* ``python -m bench.accept``: how long the store takes to accept a broadcast to a million
  recipients (one JSON line); the harness runs it for scenario 4.

Layout: :mod:`bench.children` (the processes), :mod:`bench.meter` (CPU and memory),
:mod:`bench.analysis` (rates and latencies from the simulator's record), :mod:`bench.runs`
(one measured run), :mod:`bench.scenarios` (the nine scenarios; 8 is TLS's cost, 9 a
three-node R3 NATS cluster beside the embedded single node), :mod:`bench.peers` (what a
developer would write instead), :mod:`bench.report` and :mod:`bench.charts` (the output).
"""
