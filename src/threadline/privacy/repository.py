"""All SQL of the privacy package. Tenant first in every signature."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import asyncpg

from threadline.db import Executor
from threadline.privacy.modes import POLICY_KEY, PiiPolicy, parse


async def tenant_setting(db: Executor, tenant_id: uuid.UUID, key: str, *, lock: bool = False) -> Any:
    return await db.fetchval(
        "SELECT settings -> $2::text FROM tenant WHERE id = $1" + (" FOR UPDATE" if lock else ""),
        tenant_id,
        key,
    )


async def tenant_policy(db: Executor, tenant_id: uuid.UUID) -> PiiPolicy:
    return parse(await tenant_setting(db, tenant_id, POLICY_KEY))


async def set_tenant_setting(db: Executor, tenant_id: uuid.UUID, key: str, value: Any) -> None:
    # Bound as a parameter: Piccolo mangles literal braces.
    await db.execute(
        "UPDATE tenant SET settings = settings || jsonb_build_object($2::text, $3::jsonb) WHERE id = $1",
        tenant_id,
        key,
        value,
    )


async def stored_pii(
    db: Executor, tenant_id: uuid.UUID, message_ids: list[uuid.UUID]
) -> list[asyncpg.Record]:
    return await db.fetch(
        "SELECT id, pii, deleted_at FROM message WHERE tenant_id = $1 AND id = ANY($2::uuid[])",
        tenant_id,
        message_ids,
    )


async def message_text(db: Executor, tenant_id: uuid.UUID, message_id: uuid.UUID) -> asyncpg.Record | None:
    """What the event log's snapshots follow (events.scrub): id, content, edited_at, deleted_at."""
    return await db.fetchrow(
        "SELECT id, content, edited_at, deleted_at FROM message WHERE tenant_id = $1 AND id = $2",
        tenant_id,
        message_id,
    )


async def set_text(
    db: Executor, tenant_id: uuid.UUID, message_id: uuid.UUID, content: str, pii: list[dict[str, Any]] | None
) -> None:
    """The stored text and detections of a message, without marking it edited (a policy applied to it)."""
    await db.execute(
        "UPDATE message SET content = $3, pii = $4 WHERE tenant_id = $1 AND id = $2",
        tenant_id,
        message_id,
        content,
        pii,
    )


async def tenants_with_policy(db: Executor, tenant_id: uuid.UUID | None) -> list[asyncpg.Record]:
    """Tenants whose policy scans content (all but OFF), or just `tenant_id`'s if it has one."""
    return await db.fetch(
        f"""SELECT id, settings ->> '{POLICY_KEY}' AS policy FROM tenant
            WHERE settings ->> '{POLICY_KEY}' IN ('DETECT', 'MASK_ON_WRITE', 'MASK_ON_READ')
              AND ($1::uuid IS NULL OR id = $1) ORDER BY id""",
        tenant_id,
    )


async def lock_unscanned(db: Executor, tenant_id: uuid.UUID, limit: int) -> list[asyncpg.Record]:
    """Messages never scanned (deleted ones have no text), locked for the caller's transaction."""
    return await db.fetch(
        """SELECT id, content, parts, edited_at, deleted_at FROM message
           WHERE tenant_id = $1 AND pii IS NULL AND deleted_at IS NULL
           ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED""",
        tenant_id,
        limit,
    )


async def set_scanned(
    db: Executor,
    tenant_id: uuid.UUID,
    message_id: uuid.UUID,
    content: str,
    parts: list[dict[str, Any]] | None,
    pii: list[dict[str, Any]],
) -> None:
    await db.execute(
        """UPDATE message SET pii = $5,
               content = CASE WHEN content IS DISTINCT FROM $3 THEN $3 ELSE content END,
               parts = CASE WHEN parts IS DISTINCT FROM $4::jsonb THEN $4::jsonb ELSE parts END
           WHERE tenant_id = $1 AND id = $2""",
        tenant_id,
        message_id,
        content,
        parts,
        pii,
    )


async def edits_of(db: Executor, tenant_id: uuid.UUID, message_id: uuid.UUID) -> list[asyncpg.Record]:
    return await db.fetch(
        "SELECT id, content FROM message_edit WHERE tenant_id = $1 AND message_id = $2", tenant_id, message_id
    )


async def set_edit_contents(
    db: Executor, tenant_id: uuid.UUID, ids: list[uuid.UUID], contents: list[str]
) -> None:
    await db.execute(
        """UPDATE message_edit e SET content = v.content
           FROM unnest($2::uuid[], $3::text[]) AS v(id, content)
           WHERE e.tenant_id = $1 AND e.id = v.id""",
        tenant_id,
        ids,
        contents,
    )


# -- anonymisation ----------------------------------------------------------------------------------------


async def lock_authored(db: Executor, tenant_id: uuid.UUID, user_id: uuid.UUID) -> list[asyncpg.Record]:
    return await db.fetch(
        """SELECT id, content, parts, metadata, edited_at, deleted_at FROM message
           WHERE tenant_id = $1 AND author_id = $2 ORDER BY id FOR UPDATE""",
        tenant_id,
        user_id,
    )


async def set_anonymised(
    db: Executor,
    tenant_id: uuid.UUID,
    message_id: uuid.UUID,
    content: str,
    parts: Any,
    metadata: Any,
    pii: list[dict[str, Any]],
) -> None:
    await db.execute(
        """UPDATE message SET pii = $6,
               content = CASE WHEN content IS DISTINCT FROM $3 THEN $3 ELSE content END,
               parts = CASE WHEN parts IS DISTINCT FROM $4::jsonb THEN $4::jsonb ELSE parts END,
               metadata = CASE WHEN metadata IS DISTINCT FROM $5::jsonb THEN $5::jsonb ELSE metadata END
           WHERE tenant_id = $1 AND id = $2""",
        tenant_id,
        message_id,
        content,
        parts,
        metadata,
        pii,
    )


async def edits_of_messages(
    db: Executor, tenant_id: uuid.UUID, message_ids: list[uuid.UUID]
) -> list[asyncpg.Record]:
    return await db.fetch(
        "SELECT id, content FROM message_edit WHERE tenant_id = $1 AND message_id = ANY($2::uuid[])",
        tenant_id,
        message_ids,
    )


async def drop_chunks_of(db: Executor, tenant_id: uuid.UUID, message_ids: list[uuid.UUID]) -> None:
    await db.execute(
        "DELETE FROM message_chunk WHERE tenant_id = $1 AND message_id = ANY($2::uuid[])",
        tenant_id,
        message_ids,
    )


async def mask_feedback_comments(
    db: Executor, tenant_id: uuid.UUID, user_id: uuid.UUID, masked: Callable[[str], str]
) -> None:
    rows = await db.fetch(
        "SELECT id, comment FROM message_feedback WHERE tenant_id = $1 AND user_id = $2 AND comment <> ''",
        tenant_id,
        user_id,
    )
    changed = [(r["id"], masked(r["comment"])) for r in rows if masked(r["comment"]) != r["comment"]]
    if changed:
        await db.execute(
            """UPDATE message_feedback f SET comment = v.comment
               FROM unnest($2::uuid[], $3::text[]) AS v(id, comment) WHERE f.tenant_id = $1 AND f.id = v.id""",
            tenant_id,
            [c[0] for c in changed],
            [c[1] for c in changed],
        )


async def mask_owned_conversations(
    db: Executor, tenant_id: uuid.UUID, user_id: uuid.UUID, masked: Callable[[str], str]
) -> None:
    rows = await db.fetch(
        "SELECT id, title, description FROM conversation WHERE tenant_id = $1 AND owner_id = $2 FOR UPDATE",
        tenant_id,
        user_id,
    )
    for r in rows:
        title = masked(r["title"])
        description = masked(r["description"]) if r["description"] is not None else None
        if title != r["title"] or description != r["description"]:
            await db.execute(
                "UPDATE conversation SET title = $3, description = $4 WHERE tenant_id = $1 AND id = $2",
                tenant_id,
                r["id"],
                title,
                description,
            )


async def replace_event_ids(
    db: Executor, tenant_id: uuid.UUID, old_id: uuid.UUID, new_id: uuid.UUID, old: str, new: str
) -> None:
    """Logged events that name `old` (a public user id) name `new` instead (ids are opaque, fixed-length
    strings: a textual replace cannot touch anything else), and those addressed to `old_id` are addressed to
    `new_id`."""
    await db.execute(
        """UPDATE stream_event SET payload = replace(payload::text, $2, $3)::jsonb
           WHERE tenant_id = $1 AND strpos(payload::text, $2) > 0""",
        tenant_id,
        old,
        new,
    )
    await db.execute(
        "UPDATE stream_event SET recipient_id = $3 WHERE tenant_id = $1 AND recipient_id = $2",
        tenant_id,
        old_id,
        new_id,
    )


async def texts_with_events(
    db: Executor, tenant_id: uuid.UUID, conversation_id: uuid.UUID
) -> list[asyncpg.Record]:
    """(id, content, edited_at, deleted_at) of the conversation's messages that some logged event carries."""
    return await db.fetch(
        """SELECT m.id, m.content, m.edited_at, m.deleted_at FROM message m
           WHERE m.tenant_id = $1 AND m.conversation_id = $2 AND m.content <> ''
             AND EXISTS (SELECT 1 FROM stream_event e WHERE e.tenant_id = $1 AND e.message_id = m.id)""",
        tenant_id,
        conversation_id,
    )
