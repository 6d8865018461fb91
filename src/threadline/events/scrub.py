"""Logged events follow the content they carry (ARCHITECTURE.md, "Deleted means gone").

`thread.new` and `thread.activity` carry a snapshot of a message, `message.delta` a piece of its streamed
text, and a replay (`since`) sends them again, to anyone who can read the conversation then. So when a
message's text changes (an edit, a delete, an erasure) the events already in the log are rewritten in the
same transaction: snapshots take the message's current content, `editedAt` and `deletedAt`; deltas lose
their text (the message's chunks go with them, so the content is whole in the message). Rows are updated,
never removed: ids, order and count stay what subscribers replay and resume by, and a rewrite is ordered
after every event of the message by the message row's lock, which each writer of it holds.

(The hub reads each event once and forgets it; SharedEvents, which keeps rendered events for a while, sees
the rewritten payload of a replayed event and renders it afresh.)
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Any

from threadline.db import Executor
from threadline.events.stored import text_fields


def current_text(row: Any) -> dict[str, Any]:
    """The stored snapshot fields (events.stored) that follow a message's text."""
    return text_fields(row["content"], row["edited_at"], row["deleted_at"])


async def follow_messages(tx: Executor, tenant_id: uuid.UUID, rows: Iterable[Any]) -> None:
    """Rewrite the logged events carrying the content of `rows` (message rows as they now are)."""
    current = {str(row["id"]): current_text(row) for row in rows}
    if not current:
        return
    # `message.delta` events get an empty delta; snapshots get the current fields (the key is the message
    # id as text, the patch merged into the snapshot).
    await tx.execute(
        """UPDATE stream_event e SET payload = CASE e.type
               WHEN 'message.delta' THEN e.payload || jsonb_build_object('delta', '')
               ELSE jsonb_set(e.payload, ARRAY['message'], (e.payload -> 'message') || ($2::jsonb -> e.message_id::text))
           END
           WHERE e.tenant_id = $1 AND e.message_id = ANY($3::uuid[])""",
        tenant_id,
        current,
        [uuid.UUID(key) for key in current],
    )
