"""What a Threadline export carries besides the tree: metadata (conversation and messages) and the feedback of
the user it is exported for; written back on import, bounded as live writes are (metadata.rules,
feedback.rules), out-of-bounds entries dropped with a warning."""

from __future__ import annotations

import uuid
from typing import Any

from threadline.conversations import repository as conversations
from threadline.db import Executor
from threadline.feedback import repository as feedback_repo
from threadline.metadata import repository as metadata_repo
from threadline.porting.threadline_format import iso


async def message_extras(
    db: Executor,
    tenant_id: uuid.UUID,
    conversation_id: uuid.UUID,
    message_ids: list[uuid.UUID],
    user_id: uuid.UUID | None,
) -> dict[uuid.UUID, dict[str, Any]]:
    """Per message id, the extra fields of its export entry: `metadata` if it has any, `feedback` if `user_id`
    rated it (their own only: others' comments are theirs)."""
    extras: dict[uuid.UUID, dict[str, Any]] = {}
    for row in await metadata_repo.message_metadata(db, tenant_id, message_ids):
        extras.setdefault(row["id"], {})["metadata"] = dict(row["metadata"])
    if user_id is not None:
        for row in await feedback_repo.of_user_in_conversation(db, tenant_id, user_id, conversation_id):
            extras.setdefault(row["message_id"], {})["feedback"] = {
                "rating": row["rating"].lower(),
                "reasons": list(row["reasons"]),
                "comment": row["comment"],
                "created_at": iso(row["created_at"]),
                "updated_at": iso(row["updated_at"]),
            }
    return extras


async def write_imported(
    tx: Executor,
    tenant_id: uuid.UUID,
    user_id: uuid.UUID,
    conversation_id: uuid.UUID,
    conversation_metadata: dict[str, str] | None,
    messages: list[dict[str, Any]],
) -> None:
    """An import's conversation metadata and feedback (planned rows of `porting.importer`, ids assigned): at most
    two statements whatever the size. The feedback becomes the importing user's. Messages' metadata goes in with
    the messages (porting.bulk_repository)."""
    if conversation_metadata:
        await conversations.set_imported_metadata(tx, tenant_id, conversation_id, conversation_metadata)
    rated = [m for m in messages if m.get("feedback") is not None]
    await feedback_repo.insert_many(
        tx,
        tenant_id,
        user_id,
        [
            (
                m["id"],
                m["feedback"].rating,
                m["feedback"].reasons,
                m["feedback"].comment,
                m["feedback_times"][0],
                m["feedback_times"][1],
            )
            for m in rated
        ],
    )
