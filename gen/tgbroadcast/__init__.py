"""The Telegram Broadcast Service, installed as one package.

The repository keeps one folder per part; installed, each is a subpackage of ``tgbroadcast``:

* ``tgbroadcast.v1`` (``gen/``) — the protobuf messages and gRPC stubs, generated from
  ``proto/`` (and the ``.proto`` itself); never edited by hand.
* ``tgbroadcast.core`` (``core/``) — what the API and the workers share: domain values, the
  request rules, the service both transports call, the SQL store and the NATS queue.
* ``tgbroadcast.server`` (``server/``) — the API transports: gRPC and REST.
* ``tgbroadcast.worker`` (``worker/``) — the send path: jobs from NATS, messages to Telegram
  within its limits, outcomes to SQL.
* ``tgbroadcast.simulator`` (``simulator/``) — a Telegram Bot API simulator for tests, the
  demo and benchmarks.
* ``tgbroadcast.launcher`` (``launcher/``) — the ``tgbroadcast`` command: the one place that
  composes the parts into processes.

The client library is installed beside it, in the same distribution, as the top-level
package ``tgbroadcast_client``.

May import: nothing; each subpackage says what it may import.
"""
