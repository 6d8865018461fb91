"""All SQL of persisted documents. Not tenant-scoped: documents are public API text (documents.tables)."""

from __future__ import annotations

import asyncpg

from threadline.db import Executor


async def by_id(db: Executor, doc_id: str) -> asyncpg.Record | None:
    """The document registered under `doc_id` (a manifest's id, or a hash); marks it used."""
    return await db.fetchrow(
        """UPDATE persisted_document SET last_used_at = now() WHERE id = $1
           RETURNING id, sha256, body, pinned""",
        doc_id,
    )


async def by_sha256(db: Executor, sha256: str) -> asyncpg.Record | None:
    """A document whose text hashes to `sha256` (a pinned one first); marks it used."""
    return await db.fetchrow(
        """UPDATE persisted_document SET last_used_at = now() WHERE id = (
               SELECT id FROM persisted_document WHERE sha256 = $1 ORDER BY pinned DESC, id LIMIT 1)
           RETURNING id, sha256, body, pinned""",
        sha256,
    )


async def register_automatic(db: Executor, sha256: str, body: str, max_documents: int) -> None:
    """Stores an automatically persisted query under its hash, then evicts the least recently used unpinned
    documents beyond `max_documents` (pinned ones are the operator's and do not count)."""
    await db.execute(
        """INSERT INTO persisted_document (id, sha256, body) VALUES ($1, $1, $2)
           ON CONFLICT (id) DO UPDATE SET last_used_at = now()""",
        sha256,
        body,
    )
    await db.execute(
        """DELETE FROM persisted_document WHERE id IN (
               SELECT id FROM persisted_document WHERE NOT pinned
               ORDER BY last_used_at DESC, id OFFSET $1)""",
        max(max_documents, 0),
    )


async def register_pinned(db: Executor, doc_id: str, sha256: str, body: str) -> str:
    """Registers a trusted document: "added", "pinned" (it was known, unpinned), "unchanged" (registered
    already), or "conflict" (`doc_id` names another text; left as it was: documents never change)."""
    row = await db.fetchrow(
        """INSERT INTO persisted_document (id, sha256, body, pinned) VALUES ($1, $2, $3, true)
           ON CONFLICT (id) DO UPDATE SET pinned = true, last_used_at = now()
               WHERE persisted_document.body = EXCLUDED.body
           RETURNING (xmax = 0) AS inserted, (SELECT pinned FROM persisted_document WHERE id = $1) AS was""",
        doc_id,
        sha256,
        body,
    )
    if row is None:
        return "conflict"
    if row["inserted"]:
        return "added"
    return "unchanged" if row["was"] else "pinned"


async def count(db: Executor) -> asyncpg.Record | None:
    return await db.fetchrow(
        """SELECT count(*) FILTER (WHERE pinned) AS pinned, count(*) FILTER (WHERE NOT pinned) AS automatic
           FROM persisted_document"""
    )
