"""All SQL of insights: usage aggregates over the conversations a principal may read.

"In the window" means created in [since, until). Deleted conversations are left out. Days and
hours are UTC.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import asyncpg

from threadline.auth.principal import Principal
from threadline.conversations.repository import CONVERSATION_COLUMNS, visibility_sql
from threadline.db import Executor
from threadline.threads.repository import MESSAGE_COLUMNS


def _conversations_in(principal: Principal, since: datetime, until: datetime, params: list[Any]) -> str:
    where = visibility_sql(principal, params)
    params.extend([since, until])
    n = len(params)
    return f"{where} AND c.status <> 'DELETED' AND c.created_at >= ${n - 1} AND c.created_at < ${n}"


def _messages_in(principal: Principal, since: datetime, until: datetime, params: list[Any]) -> str:
    """FROM/WHERE of messages written in the window in readable, not deleted conversations."""
    params.extend([principal.tenant_id, since, until])
    n = len(params)
    window = f"m.tenant_id = ${n - 2} AND m.created_at >= ${n - 1} AND m.created_at < ${n}"
    scratch: list[Any] = []
    visibility_sql(principal, scratch)
    if len(scratch) == 1:
        # The caller reads the whole tenant: leave out the (few) deleted conversations instead of
        # joining every message to its conversation.
        return f"""message m WHERE {window} AND m.conversation_id NOT IN
                   (SELECT d.id FROM conversation d WHERE d.tenant_id = ${n - 2} AND d.status = 'DELETED')"""
    visible = visibility_sql(principal, params)
    return f"""message m JOIN conversation c ON c.id = m.conversation_id
               WHERE {window} AND {visible} AND c.status <> 'DELETED'"""


async def conversation_totals(
    db: Executor, principal: Principal, since: datetime, until: datetime
) -> asyncpg.Record:
    params: list[Any] = []
    where = _conversations_in(principal, since, until, params)
    row = await db.fetchrow(
        f"""SELECT count(*) AS conversations, coalesce(avg(c.message_count), 0)::float8 AS average_messages
            FROM conversation c WHERE {where}""",
        *params,
    )
    assert row is not None
    return row


async def conversations_per_day(
    db: Executor, principal: Principal, since: datetime, until: datetime
) -> list[asyncpg.Record]:
    params: list[Any] = []
    where = _conversations_in(principal, since, until, params)
    return await db.fetch(
        f"""SELECT (c.created_at AT TIME ZONE 'UTC')::date AS day, count(*) AS count
            FROM conversation c WHERE {where} GROUP BY 1""",
        *params,
    )


async def message_activity(
    db: Executor, principal: Principal, since: datetime, until: datetime
) -> list[asyncpg.Record]:
    """Messages and tokens per UTC day (rows with `day`) and messages per UTC hour (rows with `hour`)."""
    params: list[Any] = []
    source = _messages_in(principal, since, until, params)
    return await db.fetch(
        f"""SELECT (m.created_at AT TIME ZONE 'UTC')::date AS day,
                   extract(hour FROM m.created_at AT TIME ZONE 'UTC')::int AS hour,
                   count(*) AS messages,
                   coalesce(sum(m.prompt_tokens) FILTER (WHERE NOT m.usage_imported), 0)::bigint AS prompt_tokens,
                   coalesce(sum(m.completion_tokens) FILTER (WHERE NOT m.usage_imported), 0)::bigint
                       AS completion_tokens
            FROM {source} GROUP BY GROUPING SETS ((1), (2))""",
        *params,
    )


async def popular_tags(
    db: Executor, principal: Principal, since: datetime, until: datetime, limit: int
) -> list[asyncpg.Record]:
    params: list[Any] = []
    where = _conversations_in(principal, since, until, params)
    params.append(limit)
    return await db.fetch(
        f"""SELECT t.tag, count(*) AS count FROM conversation c CROSS JOIN LATERAL unnest(c.tags) AS t(tag)
            WHERE {where} GROUP BY t.tag ORDER BY count DESC, t.tag LIMIT ${len(params)}""",
        *params,
    )


async def feedback_by_model(
    db: Executor, principal: Principal, since: datetime, until: datetime
) -> list[asyncpg.Record]:
    """UP and DOWN ratings given in the window on messages of readable, not deleted conversations, per model
    and provider (the run's that wrote the message, else the conversation's), most rated first."""
    params: list[Any] = []
    where = visibility_sql(principal, params)
    params.extend([since, until])
    n = len(params)
    return await db.fetch(
        f"""SELECT m.model, coalesce(
                      (SELECT r.provider FROM run r WHERE r.output_message_id = m.id ORDER BY r.created_at DESC LIMIT 1),
                      c.ai_provider) AS provider,
                  count(*) FILTER (WHERE f.rating = 'UP') AS up, count(*) FILTER (WHERE f.rating = 'DOWN') AS down
            FROM message_feedback f JOIN message m ON m.id = f.message_id JOIN conversation c ON c.id = m.conversation_id
            WHERE {where} AND c.status <> 'DELETED' AND f.created_at >= ${n - 1} AND f.created_at < ${n}
            GROUP BY 1, 2 ORDER BY count(*) DESC, 1 NULLS LAST, 2 NULLS LAST""",
        *params,
    )


async def providers(
    db: Executor, principal: Principal, since: datetime, until: datetime
) -> list[asyncpg.Record]:
    params: list[Any] = []
    where = _conversations_in(principal, since, until, params)
    return await db.fetch(
        f"""SELECT c.ai_provider AS provider, count(*) AS count FROM conversation c WHERE {where}
            GROUP BY 1 ORDER BY count DESC, provider NULLS LAST""",
        *params,
    )


# Topics, conversation length and knowledge gaps (issue 19 item 4) ------------------------------------------


async def conversation_length(
    db: Executor, principal: Principal, since: datetime, until: datetime
) -> asyncpg.Record:
    """Average messages and duration (first to last activity, seconds) of the conversations created in the
    window, with the median of each."""
    params: list[Any] = []
    where = _conversations_in(principal, since, until, params)
    row = await db.fetchrow(
        f"""SELECT count(*) AS conversations,
                   coalesce(avg(c.message_count), 0)::float8 AS average_messages,
                   coalesce(percentile_cont(0.5) WITHIN GROUP (ORDER BY c.message_count), 0)::float8
                       AS median_messages,
                   coalesce(avg(extract(epoch FROM c.last_activity_at - c.created_at)), 0)::float8
                       AS average_seconds,
                   coalesce(percentile_cont(0.5) WITHIN GROUP
                       (ORDER BY extract(epoch FROM c.last_activity_at - c.created_at)), 0)::float8 AS median_seconds
            FROM conversation c WHERE {where}""",
        *params,
    )
    assert row is not None
    return row


async def user_messages(
    db: Executor, principal: Principal, since: datetime, until: datetime, limit: int, max_chars: int
) -> list[asyncpg.Record]:
    """The newest `limit` user messages written in the window in readable, not deleted conversations (not
    deleted themselves), each cut to `max_chars` (sealed content, crypto/, is read whole: SQL cannot cut it): what
    topics are counted from."""
    params: list[Any] = []
    source = _messages_in(principal, since, until, params)
    params.extend([limit, max_chars])
    n = len(params)
    return await db.fetch(
        f"""SELECT m.conversation_id,
                   CASE WHEN left(m.content, 5) = chr(30) || 'tl1:' THEN m.content ELSE left(m.content, ${n}) END
                       AS content
            FROM {source}
                AND m.role = 'USER' AND m.deleted_at IS NULL
            ORDER BY m.created_at DESC LIMIT ${n - 1}""",
        *params,
    )


async def readable_conversations(
    db: Executor, principal: Principal, conversation_ids: list[uuid.UUID]
) -> list[asyncpg.Record]:
    params: list[Any] = []
    where = visibility_sql(principal, params)
    params.append(conversation_ids)
    return await db.fetch(
        f"""SELECT {CONVERSATION_COLUMNS} FROM conversation c
            WHERE {where} AND c.status <> 'DELETED' AND c.id = ANY(${len(params)}::uuid[])""",
        *params,
    )


async def knowledge_gaps(
    db: Executor, principal: Principal, since: datetime, until: datetime, limit: int
) -> list[asyncpg.Record]:
    """User messages written in the window (readable, not deleted) whose answers were down-rated (DOWN feedback
    on an assistant reply), regenerated (two or more assistant replies: siblings) or abandoned (a run was asked
    to answer and no assistant reply with text exists), worst first: most DOWN ratings, then most answers.

    Answers are found from their side (assistant messages written since the window began, grouped by parent),
    so the cost is one pass over the window's messages, whatever the shape of the threads."""
    params: list[Any] = []
    source = _messages_in(principal, since, until, params)
    params.extend([principal.tenant_id, since, limit])
    n = len(params)
    return await db.fetch(
        f"""WITH q AS (
                SELECT {MESSAGE_COLUMNS} FROM {source} AND m.role = 'USER' AND m.deleted_at IS NULL),
            a AS (
                SELECT r.parent_id, count(*) AS answers, count(*) FILTER (WHERE r.content <> '') AS answered,
                       sum((SELECT count(*) FROM message_feedback f WHERE f.message_id = r.id AND f.rating = 'DOWN'))
                           AS down
                FROM message r
                WHERE r.tenant_id = ${n - 2} AND r.created_at >= ${n - 1} AND r.role = 'ASSISTANT'
                    AND r.deleted_at IS NULL AND r.parent_id IN (SELECT id FROM q)
                GROUP BY r.parent_id),
            asked AS (
                SELECT DISTINCT r.message_id FROM run r WHERE r.tenant_id = ${n - 2} AND r.created_at >= ${n - 1})
            SELECT q.*, coalesce(a.answers, 0)::int AS answers, coalesce(a.down, 0)::int AS down,
                   (coalesce(a.answered, 0) = 0 AND s.message_id IS NOT NULL) AS abandoned
            FROM q LEFT JOIN a ON a.parent_id = q.id LEFT JOIN asked s ON s.message_id = q.id
            WHERE coalesce(a.down, 0) > 0 OR coalesce(a.answers, 0) > 1
               OR (coalesce(a.answered, 0) = 0 AND s.message_id IS NOT NULL)
            ORDER BY down DESC, answers DESC, abandoned DESC, q.created_at DESC, q.id
            LIMIT ${n}""",
        *params,
    )
