"""All SQL of the privacy package. Tenant first in every signature."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import asyncpg

from threadline import crypto
from threadline.conversations.repository import LABEL_VECTOR, sealed_labels
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
    stored, plain = await _sealed_change(db, tenant_id, message_id, content)
    await db.execute(
        f"""UPDATE message SET content = coalesce($3, content), pii = $4, {_VECTOR_5}
            WHERE tenant_id = $1 AND id = $2""",
        tenant_id,
        message_id,
        stored,
        pii,
        plain,
    )


# Sealed content (crypto/): the vector from the plaintext, when the statement changes sealed text ($5).
_VECTOR_5 = """search_vector = CASE WHEN $5::text IS NULL THEN search_vector
                   ELSE threadline_search_vector(threadline_search_config($1), $5::text) END"""
_VECTOR_6 = """search_vector = CASE WHEN $7::text IS NULL THEN search_vector
                   ELSE threadline_search_vector(threadline_search_config($1), $7::text) END"""


async def _sealed_change(
    db: Executor, tenant_id: uuid.UUID, message_id: uuid.UUID, content: str
) -> tuple[str | None, str | None]:
    """What a statement writes for `content`: (stored value or None to keep the row's, plaintext for the vector
    or None). Without encryption the text itself (the statement compares it); with it, the text sealed with
    the author's key only when it differs from the current plaintext (a sealed value differs every time)."""
    if not crypto.sealing():
        return content, None
    row = await db.fetchrow("SELECT content, author_id FROM message WHERE tenant_id = $1 AND id = $2", tenant_id,
                            message_id)  # fmt: skip
    if row is None or row["content"] == content:
        return None, None
    await crypto.forget_messages(db, tenant_id, [message_id])  # the unmasked text leaves this process's cache
    stored = await crypto.seal(tenant_id, content, row["author_id"])
    return stored, crypto.plain_for_index(stored, content)


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
    stored, plain = await _sealed_change(db, tenant_id, message_id, content)
    await db.execute(
        f"""UPDATE message SET pii = $5,
               content = CASE WHEN $3::text IS NOT NULL AND content IS DISTINCT FROM $3 THEN $3 ELSE content END,
               parts = CASE WHEN parts IS DISTINCT FROM $4::jsonb THEN $4::jsonb ELSE parts END,
               {_VECTOR_6.replace("$7", "$6")}
           WHERE tenant_id = $1 AND id = $2""",
        tenant_id,
        message_id,
        stored,
        parts,
        pii,
        plain,
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
        await crypto.seal_many(tenant_id, contents),
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
    stored, plain = await _sealed_change(db, tenant_id, message_id, content)
    await db.execute(
        f"""UPDATE message SET pii = $6,
               content = CASE WHEN $3::text IS NOT NULL AND content IS DISTINCT FROM $3 THEN $3 ELSE content END,
               parts = CASE WHEN parts IS DISTINCT FROM $4::jsonb THEN $4::jsonb ELSE parts END,
               metadata = CASE WHEN metadata IS DISTINCT FROM $5::jsonb THEN $5::jsonb ELSE metadata END,
               {_VECTOR_6}
           WHERE tenant_id = $1 AND id = $2""",
        tenant_id,
        message_id,
        stored,
        parts,
        metadata,
        pii,
        plain,
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
            stored, vector = await sealed_labels(
                db, tenant_id, r["id"], {"title": title, "description": description}
            )
            await db.execute(
                f"""UPDATE conversation SET title = $3, description = $4,
                       search_vector = CASE WHEN $5::text IS NULL THEN search_vector
                                            ELSE {LABEL_VECTOR.format(t="$1", label="$5", description="$6")} END
                    WHERE tenant_id = $1 AND id = $2""",
                tenant_id,
                r["id"],
                stored["title"],
                stored["description"],
                vector[0] if vector else None,
                vector[1] if vector else None,
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
