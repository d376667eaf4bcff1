"""The NATS JetStream transport: jobs for the workers and per-recipient events for watchers.

SQL is the truth; this is only transport. Two streams per ``prefix``:

* ``<PREFIX>_JOBS`` — work-queue retention, subjects ``<prefix>.jobs`` (free broadcasts) and
  ``<prefix>.jobs.paid`` (paid ones). A job is a batch of recipient ids of one broadcast. All
  workers pull one tier's jobs from ONE durable consumer (``workers``, ``workers-paid``), so
  a job is delivered to one worker at a time, and a tier's jobs never wait behind the other
  tier's; a job leaves the stream when its worker acks it. Those are the bot ``default``'s;
  every other bot's jobs have subjects and consumers of their own (``<prefix>.jobs.free.<bot>``
  / ``workers-free-<bot>``, ``<prefix>.jobs.paid.<bot>`` / ``workers-paid-<bot>``, see
  :mod:`.names`), so no bot's jobs wait behind another's.
  A job that is not acked within ``ack_wait`` (worker crashed, or no ``in_progress()``) is
  delivered again, with a higher ``num_delivered``. Jobs are therefore delivered *at least
  once*: workers must skip recipients that are already final in SQL.
* ``<PREFIX>_EVENTS`` — limits retention (7 days), subjects ``<prefix>.events.<broadcast_id>``.
  One event per recipient outcome, one per move to a status that is not final (pause,
  resume, start, recall: :class:`StatusEvent`), and one when the broadcast finishes.

Every publish carries a ``Nats-Msg-Id`` derived from its content, so a re-publish within the
duplicate window (10 minutes) is dropped by the server: a job by broadcast id, first id, count
and a hash of the ids; a result by broadcast and user id; a finish by broadcast id.

Payloads are compact JSON, datetimes ISO 8601 in UTC. A malformed job is logged and
terminated (never redelivered); a malformed event is logged and skipped by watchers.

* :mod:`.jetstream` — ``Queue``: the streams, the shared workers consumers, publishing, watching.
* :mod:`.watching` — following one broadcast's events (the watch half of ``Queue``).
* :mod:`.feeds` — one subscription per broadcast per process, fanned out to all its watchers.
* :mod:`.connection` — reaching NATS: a cluster's servers, credentials and TLS (``NatsAccess``).
* :mod:`.replication` — ``nats.replicas`` for every stream, KV bucket and object store: raised,
  never lowered.
* :mod:`.changes` — change notices on core NATS: a broadcast was created, moved, or counted
  outcomes (what list watchers follow; nothing stored).
* :mod:`.names` — what the queue's streams, subjects, consumers and media bucket are called
  under one ``prefix``.
* :mod:`.payloads` — jobs, delivery events, and their JSON encoding.
* :mod:`.received` — a job fetched from a tier's consumer, and how its worker settles it.

May import: :mod:`tgbroadcast.core.domain`.
"""

from tgbroadcast.core.domain.errors import QueueError
from tgbroadcast.core.queue.changes import Change, ChangeKind
from tgbroadcast.core.queue.connection import NatsAccess
from tgbroadcast.core.queue.jetstream import DUPLICATE_WINDOW, EVENTS_MAX_AGE, Queue
from tgbroadcast.core.queue.names import WORKERS_CONSUMER, QueueNames
from tgbroadcast.core.queue.payloads import (
    JOB_SIZE,
    ClickEvent,
    EditEvent,
    Event,
    FinishedEvent,
    Idle,
    Job,
    RecallEvent,
    ResultEvent,
    StatusEvent,
    decode_event,
    encode_event,
)
from tgbroadcast.core.queue.received import ReceivedJob

__all__ = [
    "DUPLICATE_WINDOW",
    "EVENTS_MAX_AGE",
    "JOB_SIZE",
    "WORKERS_CONSUMER",
    "Change",
    "ChangeKind",
    "ClickEvent",
    "EditEvent",
    "Event",
    "FinishedEvent",
    "Idle",
    "Job",
    "NatsAccess",
    "Queue",
    "QueueError",
    "QueueNames",
    "RecallEvent",
    "ReceivedJob",
    "ResultEvent",
    "StatusEvent",
    "decode_event",
    "encode_event",
]
