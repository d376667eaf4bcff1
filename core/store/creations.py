"""New broadcasts written together: the group commit's work for small sends.

A one-recipient send is three statements — its broadcast's row, its delivery, its recipient's
user row — and a server answering many of them commits those that wait beside each other in
one transaction (:mod:`.grouping`). :func:`create_together` writes such a group with one
statement per broadcast for the rows and one per table for all their recipients: every
delivery of the group in one ``INSERT`` (:func:`.bulk.address_together`), every new user of a
bot in one ``INSERT .. SELECT`` (:func:`.users.add_recipients_together`). What it writes is
what the creations would write one after another, but for a new user's ``created_at`` and
``updated_at``: the latest of the group's times (a few milliseconds apart), not its own
send's.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncConnection

from tgbroadcast.core.domain.model import Broadcast
from tgbroadcast.core.store import broadcasts, bulk
from tgbroadcast.core.store.broadcasts import Creation
from tgbroadcast.core.store.grouping import Work


async def create_together(
    connection: AsyncConnection, works: Sequence[Work[Broadcast]]
) -> list[Broadcast]:
    """Run ``works`` in the caller's transaction, in order; their broadcasts. When every
    one is a creation of listed recipients (a server's small sends), the rows are inserted
    one by one and the recipients of them all addressed together after them; else each
    work runs as it would alone, one after another."""
    if not all(isinstance(work, Creation) and work.listed for work in works):
        return [await work(connection) for work in works]
    creations = [work for work in works if isinstance(work, Creation)]
    inserted = [await broadcasts.insert_row(connection, creation) for creation in creations]
    await bulk.address_together(
        connection,
        [
            (broadcast_id, creation.user_ids, creation.new.bot)
            for (broadcast_id, _), creation in zip(inserted, creations, strict=True)
        ],
        now=max(creation.now for creation in creations),
    )
    return [
        created if created is not None else await broadcasts.fetch(connection, broadcast_id)
        for broadcast_id, created in inserted
    ]
