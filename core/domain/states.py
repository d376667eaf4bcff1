"""A broadcast's life: its states, the moves between them, and who makes each move.

Every status change is a conditional SQL update (``UPDATE ... WHERE id = ? AND status IN
(the sources this table allows)``), so any number of API servers and workers racing on one
broadcast make exactly one of the competing moves; the loser sees the state the winner left.

======================  ========================================================  =========
from                    to (who moves it)                                         final?
======================  ========================================================  =========
``scheduled``           ``queued`` (the scheduler, at ``send_at``),               no
                        ``cancelled`` (CancelBroadcast)
``queued``              ``running`` (a worker recorded the first outcome),        no
                        ``paused`` (PauseBroadcast), ``cancelled``, ``recalling``,
                        ``completed`` (the last recipient's outcome was recorded),
                        ``failed`` (the content circuit breaker)
``running``             ``paused``, ``cancelled``, ``completed``, ``failed``,     no
                        ``recalling``
``paused``              ``queued`` (ResumeBroadcast, nobody attempted yet),       no
                        ``running`` (ResumeBroadcast, someone was attempted),
                        ``cancelled``, ``recalling``, ``completed`` (sends in flight at the
                        pause finished the last recipients), ``failed`` (sends
                        in flight tripped the circuit breaker)
``completed``           ``recalling`` (RecallBroadcast)                           yes
``cancelled``           ``recalling``                                             yes
``failed``              ``recalling``                                             yes
``recalling``           ``recalled`` (the last sent recipient's recall was         no
                        recorded)
``recalled``            nothing                                                   yes
======================  ========================================================  =========

What the moves guarantee:

* **Pause** (queued or running): every worker stops starting sends of the broadcast within
  ``tgbroadcast.worker.delivery.STATUS_INTERVAL`` (one second); sends already in flight finish and
  are recorded. Its jobs are acknowledged and dropped; its recipients stay ``PENDING``, their claims
  released.
* **Resume** (paused): the broadcast goes back to ``running`` if any recipient was attempted
  (``started_at`` is set), else to ``queued``; ``resumed_at`` is set and the dispatcher publishes
  jobs for the recipients still ``PENDING`` as a new *generation* (their ``Nats-Msg-Id`` includes
  ``resumed_at``, so JetStream's duplicate window does not drop them, while a re-dispatch of the
  same generation is still dropped). Workers drop jobs of an older generation, and stop a job when
  they see the generation change. The new generation is published at once: a recipient whose send
  from before the pause is still in flight is claimed in SQL by its old job
  (:mod:`tgbroadcast.worker.claims`), which records it; the new job skips it and looks again later,
  and the old job releases the claims of the recipients it did not send when it lets go. Nobody is
  sent to twice, however quickly resume follows pause.
* **Cancel** (scheduled, queued, running or paused): final. No send starts after every worker
  has read the status (within a second); sends in flight finish and are counted, but the
  broadcast never becomes ``completed`` or ``running`` again. Recipients never attempted stay
  ``PENDING`` and unclaimed. ``finished_at`` is set.
* **Recall** (queued, running, paused, completed, cancelled or failed): the broadcast moves to
  ``recalling``, a final status's ``finished_at`` is kept. Nothing more is sent: recipients
  never attempted stay ``PENDING`` (cancelled, as by a cancel), and sends in flight finish and
  are recorded. Once every worker has seen the status (``RECALL_SETTLE`` seconds) the
  dispatcher publishes *recall jobs* over the recipients; a worker deletes each ``SENT``
  recipient's messages (:mod:`tgbroadcast.worker.recall`) and records its ``recall`` outcome;
  the one that records the last moves the broadcast to ``recalled``. A recall is asked for
  once: a second one is refused, naming the state.
* **Edit** (any state but recalling and recalled; not a move): the content is replaced and
  its ``content_version`` goes up by one. A sendable broadcast starts a new generation of jobs
  (as a resume does), so recipients not yet sent get the new content; sends in flight finish
  and are recorded with the version they were sent with. Once every worker has seen it
  (``EDIT_SETTLE`` seconds) the dispatcher publishes *edit jobs* over the ``SENT`` recipients
  of older versions; a worker edits each one's messages (:mod:`tgbroadcast.worker.edit`) and
  records its ``edit`` outcome; the one that records the last ends the edit (``editing``
  false). An edit may follow an edit: the newest content is what every job applies. A recall
  ends an edit in progress (nothing is edited after it).
* Counters keep moving in any state while sends in flight are recorded:
  ``sent + failed + pending == total`` always holds.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Final

from tgbroadcast.core.domain.errors import FailedPrecondition
from tgbroadcast.core.domain.model import BroadcastStatus

S = BroadcastStatus

TRANSITIONS: Final[Mapping[BroadcastStatus, frozenset[BroadcastStatus]]] = {
    S.SCHEDULED: frozenset({S.QUEUED, S.CANCELLED}),
    S.QUEUED: frozenset({S.RUNNING, S.PAUSED, S.CANCELLED, S.COMPLETED, S.FAILED, S.RECALLING}),
    S.RUNNING: frozenset({S.PAUSED, S.CANCELLED, S.COMPLETED, S.FAILED, S.RECALLING}),
    S.PAUSED: frozenset({S.QUEUED, S.RUNNING, S.CANCELLED, S.COMPLETED, S.FAILED, S.RECALLING}),
    S.COMPLETED: frozenset({S.RECALLING}),
    S.CANCELLED: frozenset({S.RECALLING}),
    S.FAILED: frozenset({S.RECALLING}),
    S.RECALLING: frozenset({S.RECALLED}),
    S.RECALLED: frozenset(),
}
"""Every legal move: ``TRANSITIONS[from]`` is the set of states ``from`` may move to."""


class Command(enum.StrEnum):
    """A move asked for from outside the send path (the API or the scheduler)."""

    CANCEL = "cancel"
    PAUSE = "pause"
    RESUME = "resume"
    START = "start"
    """The scheduler's: a scheduled broadcast whose ``send_at`` has come."""
    RECALL = "recall"

    @property
    def sources(self) -> frozenset[BroadcastStatus]:
        """The states this command moves a broadcast out of."""
        return _SOURCES[self]

    @property
    def past_tense(self) -> str:
        return _PAST[self]


_SOURCES: Final = {
    Command.CANCEL: frozenset({S.SCHEDULED, S.QUEUED, S.RUNNING, S.PAUSED}),
    Command.PAUSE: frozenset({S.QUEUED, S.RUNNING}),
    Command.RESUME: frozenset({S.PAUSED}),
    Command.START: frozenset({S.SCHEDULED}),
    Command.RECALL: frozenset({S.QUEUED, S.RUNNING, S.PAUSED, S.COMPLETED, S.CANCELLED, S.FAILED}),
}
_PAST: Final = {
    Command.CANCEL: "cancelled",
    Command.PAUSE: "paused",
    Command.RESUME: "resumed",
    Command.START: "started",
    Command.RECALL: "recalled",
}

SENDABLE: Final = frozenset({S.QUEUED, S.RUNNING})
"""States in which workers send and the dispatcher publishes jobs."""

SEND_PENDING: Final = frozenset({S.SCHEDULED, S.QUEUED, S.RUNNING, S.PAUSED})
"""States whose pending recipients may still be sent (those of the others never are)."""

EDITABLE: Final = frozenset(
    {S.SCHEDULED, S.QUEUED, S.RUNNING, S.PAUSED, S.COMPLETED, S.CANCELLED, S.FAILED}
)
"""States whose content EditBroadcast replaces (recalling and recalled have nothing to edit)."""

RECALL_SETTLE: Final = 2.0
"""Seconds after a recall before its jobs are cut: every worker has read the status by then
(workers read it at most a second old), so no send starts afterwards and the sends still in
flight hold claims the recall jobs wait for."""


EDIT_SETTLE: Final = RECALL_SETTLE
"""Seconds after an edit before its jobs are cut: every worker has read the new generation,
so no send of the old content starts afterwards."""


def sources(target: BroadcastStatus) -> frozenset[BroadcastStatus]:
    """Every state from which ``target`` may be reached."""
    return frozenset(state for state, targets in TRANSITIONS.items() if target in targets)


def generation(resumed_at: datetime | None) -> int:
    """The generation of a broadcast's jobs: 0 until it is first resumed, then the
    microseconds since the epoch of its last resume (distinct per resume, the same for every
    dispatch of one)."""
    if resumed_at is None:
        return 0
    delta = resumed_at - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


def command_not_allowed(
    broadcast_id: int, current: BroadcastStatus, command: Command
) -> FailedPrecondition:
    """The error for ``command`` on a broadcast in ``current``, naming that state."""
    allowed = sorted(command.sources, key=list(BroadcastStatus).index)
    names = [state.value for state in allowed]
    listed = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]
    return FailedPrecondition(
        f"broadcast {broadcast_id} is {current.value}: only a {listed} broadcast can be "
        f"{command.past_tense}",
        state=current.value,
    )
