"""Logged events follow the content they carry (ARCHITECTURE.md, "Deleted means gone").

`thread.new` and `thread.activity` carry a snapshot of a message, `message.delta` a piece of its streamed
text, and a replay (`since`) sends them again, to anyone who can read the conversation then. So when a
message's text changes (an edit, a delete, an erasure) the events already in the log are rewritten in the
same transaction: snapshots take the message's current content, `editedAt` and `deletedAt`; deltas lose
their text (the message's chunks go with them, so the content is whole in the message). Rows are updated,
never removed: ids, order and count stay what subscribers replay and resume by, and a rewrite is ordered
after every event of the message by the message row's lock, which each writer of it holds.

(The hub reads each event once and forgets it; SharedEvents, which keeps rendered events for a while, sees
the rewritten payload of a replayed event and renders it afresh. The statement that rewrites is
events.repository.rewrite_message_events.)
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Any

from threadline import crypto
from threadline.db import Executor
from threadline.events import repository as event_repo
from threadline.events.stored import text_fields


def current_text(row: Any) -> dict[str, Any]:
    """The stored snapshot fields (events.stored) that follow a message's text."""
    return text_fields(row["content"], row["edited_at"], row["deleted_at"])


async def follow_messages(tx: Executor, tenant_id: uuid.UUID, rows: Iterable[Any]) -> None:
    """Rewrite the logged events carrying the content of `rows` (message rows as they now are)."""
    current = {str(row["id"]): current_text(row) for row in rows}
    if not current:
        return
    if crypto.sealing():  # encryption at rest: the log holds the text sealed like the message
        authors = {str(row["id"]): row.get("author_id") for row in rows}
        for key, fields in current.items():
            fields["content"] = await crypto.seal(tenant_id, fields["content"], authors.get(key))
    # Keyed by the message id as text: the statement merges each message's patch into its snapshots.
    await event_repo.rewrite_message_events(tx, tenant_id, current)
