"""All SQL of enrichment jobs and the conversation text they read. Tenant first in every signature, except the
claim, which takes the next due job of any tenant (the worker is not anyone's session)."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg

from threadline.conversations.repository import LABEL_VECTOR, sealed_labels
from threadline.db import Executor

CHANNEL = "threadline_enrichment"
JOB_COLUMNS = """id, tenant_id, conversation_id, kind, status, generation, attempts, due_messages, run_after,
    locked_by, locked_until, generator, last_error_code, last_error_message, result_text, result_tags,
    result_messages, source_ids, created_at, updated_at, finished_at"""


async def claim_next(
    db: Executor, worker_id: str, lease_seconds: float, keyless: bool = False
) -> asyncpg.Record | None:
    """The next due job (or one whose worker's lease lapsed), now RUNNING for `worker_id`. A `keyless` worker (no
    master key in its process) takes no job of a tenant with data keys: it would read sealed text as it is stored
    (and make a title of ciphertext, stored plain); a worker with the key takes those."""
    return await db.fetchrow(
        f"""UPDATE enrichment_job j SET status = 'RUNNING', attempts = j.attempts + 1, locked_by = $1,
                   locked_until = now() + make_interval(secs => $2), updated_at = now()
            WHERE j.id = (SELECT q.id FROM enrichment_job q
                          WHERE ((q.status = 'QUEUED' AND q.run_after <= now())
                                 OR (q.status = 'RUNNING' AND q.locked_until < now()))
                            AND NOT ($3 AND EXISTS (SELECT 1 FROM data_key k WHERE k.tenant_id = q.tenant_id))
                          ORDER BY q.run_after LIMIT 1 FOR UPDATE SKIP LOCKED)
            RETURNING {JOB_COLUMNS}""",
        worker_id,
        lease_seconds,
        keyless,
    )


async def finish(
    db: Executor, job: asyncpg.Record, status: str, changes: dict[str, Any]
) -> asyncpg.Record | None:
    """End a claimed job; None when it is no longer this claim's (requeued by an edit, or taken over)."""
    params: list[Any] = [job["tenant_id"], job["id"], job["generation"], job["locked_by"], status]
    sets = ["status = $5", "locked_by = NULL", "locked_until = NULL", "updated_at = now()"]
    for column, value in changes.items():
        params.append(value)
        sets.append(f"{column} = ${len(params)}")
    return await db.fetchrow(
        f"""UPDATE enrichment_job SET {", ".join(sets)}
            WHERE tenant_id = $1 AND id = $2 AND generation = $3 AND locked_by = $4 AND status = 'RUNNING'
            RETURNING {JOB_COLUMNS}""",
        *params,
    )


async def job(
    db: Executor, tenant_id: uuid.UUID, conversation_id: uuid.UUID, kind: str, *, lock: bool = False
) -> asyncpg.Record | None:
    return await db.fetchrow(
        f"""SELECT {JOB_COLUMNS} FROM enrichment_job WHERE tenant_id = $1 AND conversation_id = $2 AND kind = $3
            {"FOR UPDATE" if lock else ""}""",
        tenant_id,
        conversation_id,
        kind,
    )


async def jobs_of(
    db: Executor, tenant_id: uuid.UUID, conversation_ids: list[uuid.UUID]
) -> list[asyncpg.Record]:
    return await db.fetch(
        f"""SELECT {JOB_COLUMNS} FROM enrichment_job WHERE tenant_id = $1 AND conversation_id = ANY($2::uuid[])
            ORDER BY conversation_id, kind""",
        tenant_id,
        conversation_ids,
    )


async def queue(db: Executor, tenant_id: uuid.UUID, conversation_id: uuid.UUID, kind: str) -> asyncpg.Record:
    """Queue a job now (a retry): a new row, or the existing one with a fresh generation and no attempts."""
    row = await db.fetchrow(
        f"""INSERT INTO enrichment_job AS j (id, tenant_id, conversation_id, kind) VALUES ($1, $2, $3, $4)
            ON CONFLICT (conversation_id, kind) DO UPDATE SET status = 'QUEUED', run_after = now(),
                due_messages = NULL, attempts = 0, generation = j.generation + 1, locked_by = NULL,
                locked_until = NULL, last_error_code = NULL, last_error_message = NULL, updated_at = now()
            RETURNING {JOB_COLUMNS}""",
        uuid.uuid4(),
        tenant_id,
        conversation_id,
        kind,
    )
    assert row is not None
    await db.execute("SELECT pg_notify($1, 'queued')", CHANNEL)
    return row


async def notify(db: Executor) -> None:
    """Wake the enrichment workers (a job was queued again)."""
    await db.execute("SELECT pg_notify($1, 'queued')", CHANNEL)


async def conversation(
    db: Executor, tenant_id: uuid.UUID, conversation_id: uuid.UUID
) -> asyncpg.Record | None:
    return await db.fetchrow(
        """SELECT id, tenant_id, owner_id, status, title, title_source, ai_provider, model, message_count, tags
           FROM conversation WHERE tenant_id = $1 AND id = $2""",
        tenant_id,
        conversation_id,
    )


async def first_exchange(
    db: Executor, tenant_id: uuid.UUID, conversation_id: uuid.UUID, max_chars: int
) -> asyncpg.Record | None:
    """The first user message and the first assistant answer after it (both not deleted, at most `max_chars`
    each: sealed content (crypto/) is read whole, SQL cannot cut it), and whether that answer is still being
    streamed."""
    return await db.fetchrow(
        """WITH q AS (
               SELECT m.id, CASE WHEN left(m.content, 5) = chr(30) || 'tl1:' THEN m.content ELSE left(m.content, $3) END AS content, m.created_at, m.seq FROM message m
               WHERE m.tenant_id = $1 AND m.conversation_id = $2 AND m.role = 'USER' AND m.deleted_at IS NULL
               ORDER BY m.created_at, m.seq LIMIT 1)
           SELECT q.id AS question_id, q.content AS question, a.id AS answer_id, a.content AS answer,
                  a.streaming, a.created_at AS answered_at
           FROM q LEFT JOIN LATERAL (
               SELECT m.id, CASE WHEN left(m.content, 5) = chr(30) || 'tl1:' THEN m.content ELSE left(m.content, $3) END AS content, m.created_at,
                      EXISTS (SELECT 1 FROM message_stream s WHERE s.tenant_id = $1 AND s.id = m.id
                              AND s.finished_at IS NULL) AS streaming
               FROM message m
               WHERE m.tenant_id = $1 AND m.conversation_id = $2 AND m.role = 'ASSISTANT' AND m.deleted_at IS NULL
                 AND (m.created_at, m.seq) > (q.created_at, q.seq)
               ORDER BY m.created_at, m.seq LIMIT 1) a ON true""",
        tenant_id,
        conversation_id,
        max_chars,
    )


async def recent_messages(
    db: Executor, tenant_id: uuid.UUID, conversation_id: uuid.UUID, limit: int, max_chars: int
) -> list[asyncpg.Record]:
    """The newest `limit` user and assistant messages, not deleted, oldest first, each cut to `max_chars`."""
    return await db.fetch(
        """SELECT id, role, content FROM (
               SELECT m.id, m.role, CASE WHEN left(m.content, 5) = chr(30) || 'tl1:' THEN m.content ELSE left(m.content, $4) END AS content, m.created_at, m.seq FROM message m
               WHERE m.tenant_id = $1 AND m.conversation_id = $2 AND m.deleted_at IS NULL
                 AND m.role IN ('USER', 'ASSISTANT') AND m.content <> ''
               ORDER BY m.created_at DESC, m.seq DESC LIMIT $3) recent
           ORDER BY created_at, seq""",
        tenant_id,
        conversation_id,
        limit,
        max_chars,
    )


async def owner_vocabulary(
    db: Executor, tenant_id: uuid.UUID, owner_id: uuid.UUID | None, limit: int
) -> list[str]:
    """The tags on conversations the owner takes part in (not deleted), most used first: the vocabulary a
    suggestion may come from, so it names no tag its readers' owner could not already see."""
    if owner_id is None:
        return []
    rows = await db.fetch(
        """SELECT t.tag FROM conversation c JOIN participant p ON p.conversation_id = c.id AND p.user_id = $2
           CROSS JOIN LATERAL unnest(c.tags) AS t(tag)
           WHERE c.tenant_id = $1 AND c.status <> 'DELETED'
           GROUP BY t.tag ORDER BY count(*) DESC, t.tag LIMIT $3""",
        tenant_id,
        owner_id,
        limit,
    )
    return [r["tag"] for r in rows]


async def title_source(
    db: Executor, tenant_id: uuid.UUID, conversation_id: uuid.UUID, *, lock: bool = False
) -> str | None:
    value: str | None = await db.fetchval(
        f"""SELECT title_source FROM conversation WHERE tenant_id = $1 AND id = $2 {"FOR UPDATE" if lock else ""}""",
        tenant_id,
        conversation_id,
    )
    return value


async def apply_title(db: Executor, tenant_id: uuid.UUID, conversation_id: uuid.UUID, title: str) -> bool:
    """Set a generated title unless someone set one meanwhile (the row lock orders it after their update). Sealed,
    with its vector from the plaintext, where titles are (crypto/)."""
    stored, vector = await sealed_labels(db, tenant_id, conversation_id, {"title": title})
    row = await db.fetchrow(
        f"""UPDATE conversation SET title = $3, title_source = 'GENERATED', updated_at = now(),
               search_vector = CASE WHEN $4::text IS NULL THEN search_vector
                                    ELSE {LABEL_VECTOR.format(t="$1", label="$4", description="$5")} END
           WHERE tenant_id = $1 AND id = $2 AND title_source = 'DEFAULT' AND status <> 'DELETED' RETURNING id""",
        tenant_id,
        conversation_id,
        stored["title"],
        vector[0] if vector else None,
        vector[1] if vector else None,
    )
    return row is not None


async def states_of(
    db: Executor, tenant_id: uuid.UUID, conversation_ids: list[uuid.UUID]
) -> list[asyncpg.Record]:
    """Each conversation's title source and its jobs (one row per job; one row with NULL job columns when it has
    none), for the conversations of a response at once."""
    return await db.fetch(
        """SELECT c.id AS conversation_id, c.title_source, j.kind, j.status, j.attempts, j.due_messages,
                  j.generator, j.last_error_code, j.last_error_message, j.result_text, j.result_tags,
                  j.result_messages, j.created_at, j.updated_at, j.finished_at
           FROM conversation c LEFT JOIN enrichment_job j ON j.tenant_id = c.tenant_id AND j.conversation_id = c.id
           WHERE c.tenant_id = $1 AND c.id = ANY($2::uuid[]) ORDER BY c.id, j.kind DESC""",
        tenant_id,
        conversation_ids,
    )


async def reopen_title(db: Executor, tenant_id: uuid.UUID, conversation_id: uuid.UUID) -> None:
    """A generated title may be generated again: it stays shown until the new one replaces it."""
    await db.execute(
        "UPDATE conversation SET title_source = 'DEFAULT' WHERE tenant_id = $1 AND id = $2 AND title_source = 'GENERATED'",
        tenant_id,
        conversation_id,
    )


async def watch_next_message(db: Executor, tenant_id: uuid.UUID, conversation_id: uuid.UUID) -> None:
    """A job was queued outside the triggers (a retry): the next message lets the queueing trigger through, which
    then keeps `enrichment_due` from the job's own due."""
    await db.execute(
        """UPDATE conversation SET enrichment_due = least(coalesce(enrichment_due, message_count + 1),
               message_count + 1)
           WHERE tenant_id = $1 AND id = $2""",
        tenant_id,
        conversation_id,
    )


async def forget_results_of(db: Executor, tenant_id: uuid.UUID, message_ids: list[uuid.UUID]) -> None:
    """What was made from these messages' earlier text goes, as after an edit (the message trigger does the same):
    the summary and suggestions of their conversations are made again, and a title made from one of them goes back
    to the placeholder. For writers that change a message's text in place without editing it (PII masking)."""
    if message_ids:
        await db.execute(
            """SELECT threadline_enrichment_forget(conversation_id, array_agg(id)) FROM message
               WHERE tenant_id = $1 AND id = ANY($2::uuid[]) GROUP BY conversation_id""",
            tenant_id,
            message_ids,
        )
