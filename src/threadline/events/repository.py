"""All SQL of the event log (`stream_event`, `stream_state`): publishing, the hub's tail, replay, retention and
the rewrite that makes logged events follow a message's content. Tenant first in every signature.

Three statements span every tenant on purpose, each where the log is one thing rather than one tenant's:
- `read_tail` (and `open_publishers`): the hub of a process routes every tenant's events and its cursor is a
  position in the one sequence all tenants draw from, so it must see every row to know which ids are
  committed; each event carries its tenant_id and the hub offers it only to that tenant's subscriptions
  (`Subscriber.wants`, `StreamHub._offer_in_conversation`);
- `prune_batch` / `note_pruned_through` / `pruned_through`: retention is one age for the whole log, and
  `stream_state` (no tenant column) remembers one highest pruned id, which every tenant's cursors are compared
  with (a cursor below it may have lost events).

The publish-lock protocol (advisory lock keys, the floor setting, the NOTIFY channel) is events.publish's;
its values come in as arguments, so this module imports nothing of the events package.
"""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
import orjson

from threadline import crypto
from threadline.db import Database, Executor

EVENT_COLUMNS = "id, tenant_id, conversation_id, root_id, recipient_id, type, payload, created_at"


async def insert_event(
    tx: Executor,
    tenant_id: uuid.UUID,
    conversation_id: uuid.UUID | None,
    root_id: uuid.UUID | None,
    recipient_id: uuid.UUID | None,
    type: str,
    payload: dict[str, Any],
    *,
    channel: str,
    notice_prefix: str,
    bucket_lock: int,
    bucket: int,
    floor_setting: str,
    floor_base: int,
) -> int:
    """Takes the publish locks (events.publish explains them), draws the event's id, inserts its row and
    NOTIFYs `notice_prefix` + id on `channel` (no NOTIFY when `channel` is "": the process wakes hubs another
    way, events.publish): one statement in the writer's transaction. The MATERIALIZED
    CTEs run before the INSERT's nextval, so the locks are held before the id is drawn. The floor lock is
    taken once per transaction (the transaction-local `floor_setting` remembers it): one lock per bulk
    import, not one per event. The bucket lock is re-entrant, so repeating it adds nothing."""
    payload = await crypto.seal_event_payload(tenant_id, payload)  # encryption at rest (crypto/)
    return int(
        await tx.fetchval(
            """WITH s AS MATERIALIZED (
                   SELECT coalesce(current_setting($10, true), '') = '' AS first,
                          CASE WHEN is_called THEN last_value ELSE last_value - 1 END AS floor
                   FROM stream_event_id_seq
               ),
               f AS MATERIALIZED (
                   SELECT CASE WHEN s.first THEN pg_try_advisory_xact_lock_shared($11::bigint + s.floor) END AS held,
                          CASE WHEN s.first THEN set_config($10, s.floor::text, true) END AS noted
                   FROM s
               ),
               x AS MATERIALIZED (
                   SELECT pg_advisory_xact_lock_shared($9::int, $12::int) AS locked, f.held, f.noted FROM f
               ),
               e AS (
                   INSERT INTO stream_event (id, tenant_id, conversation_id, root_id, recipient_id, type, payload)
                   SELECT nextval('stream_event_id_seq'), $1, $2, $3, $4, $5, $6 FROM x
                   RETURNING id
               )
               SELECT e.id FROM e, LATERAL (SELECT CASE WHEN $7 <> '' THEN pg_notify($7, $8 || e.id::text) END) n""",
            tenant_id,
            conversation_id,
            root_id,
            recipient_id,
            type,
            payload,
            channel,
            notice_prefix,
            bucket_lock,
            floor_setting,
            floor_base,
            bucket,
        )
    )


async def insert_events(
    tx: Executor,
    rows: list[tuple[uuid.UUID, uuid.UUID | None, uuid.UUID | None, uuid.UUID | None, str, dict[str, Any]]],
    *,
    channel: str,
    bucket_lock: int,
    buckets: list[int],
    floor_setting: str,
    floor_base: int,
) -> list[int]:
    """`insert_event` for many rows at once, `rows` being (tenant, conversation, root, recipient, type,
    payload): the same locks (the floor once per transaction, one bucket lock per distinct bucket), ids drawn in
    the rows' order, and one NOTIFY for the batch (a hub reads the whole tail on any notice). One statement,
    whatever the count, so a bulk writer holds its floor only for this statement and its commit. Arrays, not
    one bind parameter per value (asyncpg's 32,767 limit)."""
    if not rows:
        return []
    tenants, conversations, roots, recipients, types, payloads = (list(c) for c in zip(*rows, strict=True))
    if crypto.sealing():
        payloads = [await crypto.seal_event_payload(t, p) for t, p in zip(tenants, payloads, strict=True)]
    ids = await tx.fetch(
        """WITH s AS MATERIALIZED (
               SELECT coalesce(current_setting($8, true), '') = '' AS first,
                      CASE WHEN is_called THEN last_value ELSE last_value - 1 END AS floor
               FROM stream_event_id_seq
           ),
           f AS MATERIALIZED (
               SELECT CASE WHEN s.first THEN pg_try_advisory_xact_lock_shared($9::bigint + s.floor) END AS held,
                      CASE WHEN s.first THEN set_config($8, s.floor::text, true) END AS noted
               FROM s
           ),
           x AS MATERIALIZED (
               SELECT (SELECT count(pg_advisory_xact_lock_shared($10::int, b)) FROM unnest($11::int[]) AS b)
                      AS locked, f.held, f.noted
               FROM f
           ),
           e AS (
               INSERT INTO stream_event (id, tenant_id, conversation_id, root_id, recipient_id, type, payload)
               SELECT nextval('stream_event_id_seq'), r.t, r.c, r.ro, r.re, r.ty, r.p::jsonb
               FROM x, unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::uuid[], $5::text[], $6::text[])
                    WITH ORDINALITY AS r (t, c, ro, re, ty, p, n)
               ORDER BY r.n
               RETURNING id
           ),
           n AS (SELECT CASE WHEN $7 <> '' THEN pg_notify($7, ':' || max(id)::text) END FROM e)
           SELECT e.id FROM e, n ORDER BY e.id""",
        tenants,
        conversations,
        roots,
        recipients,
        types,
        [orjson.dumps(p).decode() for p in payloads],
        channel,
        floor_setting,
        floor_base,
        bucket_lock,
        buckets,
    )
    return [int(r["id"]) for r in ids]


# The sequence position first, then the publish locks: a transaction whose locks are not seen draws its
# ids after the position was read, so above it. (The lateral subquery refers to the position, so it can
# only run once the position is read; pg_lock_status() runs inside it.)
_PUBLISHERS = """
    SELECT s.position, l.txs, l.floors, l.buckets FROM (
        SELECT CASE WHEN is_called THEN last_value ELSE last_value - 1 END AS position
        FROM stream_event_id_seq OFFSET 0
    ) s
    CROSS JOIN LATERAL (
        SELECT array_agg(virtualtransaction) AS txs,
               array_agg(CASE WHEN objsubid = 1 THEN ((classid::int8 & 65535) << 32) | objid::int8 END) AS floors,
               array_agg(CASE WHEN objsubid = 2 THEN objid::int8 END) AS buckets
        FROM pg_locks
        WHERE locktype = 'advisory' AND granted AND s.position IS NOT NULL
          AND ((objsubid = 1 AND classid::int8 >> 16 = $1) OR (objsubid = 2 AND classid::int8 = $2))
    ) l"""


async def open_publishers(db: Executor, *, floor_tag: int, bucket_lock: int) -> asyncpg.Record | None:
    """The sequence position, then the open publishers' locks (position, txs, floors, buckets): no table row,
    so no tenant (see the module's docstring)."""
    return await db.fetchrow(_PUBLISHERS, floor_tag, bucket_lock)


async def read_tail(
    db: Database, after: int, limit: int, *, floor_tag: int, bucket_lock: int
) -> list[asyncpg.Record]:
    """Every tenant's committed events after `after` (at most `limit`), each row also carrying the publishers
    read live after the events' snapshot (a single row with null event columns when there is no event).
    Cross-tenant by design: see the module's docstring."""
    return await db.fetch(
        f"""SELECT p.position, p.txs, p.floors, p.buckets, e.* FROM ({_PUBLISHERS}) p
            LEFT JOIN LATERAL (
                SELECT {EVENT_COLUMNS} FROM stream_event WHERE id > $3 ORDER BY id LIMIT $4
            ) e ON true
            ORDER BY e.id""",
        floor_tag,
        bucket_lock,
        after,
        limit,
    )


async def replay(
    db: Executor,
    tenant_id: uuid.UUID,
    *,
    after: int,
    through: int,
    conversation_ids: list[uuid.UUID] | None,
    recipient_id: uuid.UUID,
    limit: int,
) -> list[asyncpg.Record]:
    """The tenant's events in (after, through]: those of `conversation_ids` (None: none) and those addressed to
    `recipient_id`, in id order."""
    if conversation_ids is None:
        return await db.fetch(
            f"""SELECT {EVENT_COLUMNS} FROM stream_event
                WHERE tenant_id = $1 AND id > $2 AND id <= $3 AND recipient_id = $4
                ORDER BY id LIMIT $5""",
            tenant_id,
            after,
            through,
            recipient_id,
            limit,
        )
    return await db.fetch(
        f"""SELECT {EVENT_COLUMNS} FROM stream_event
            WHERE tenant_id = $1 AND id > $2 AND id <= $3
              AND (conversation_id = ANY($4::uuid[]) OR recipient_id = $5)
            ORDER BY id LIMIT $6""",
        tenant_id,
        after,
        through,
        conversation_ids,
        recipient_id,
        limit,
    )


async def pruned_through(db: Executor) -> int:
    """The highest id retention removed (0 if none): one value for the whole log (see the module's docstring)."""
    value = await db.fetchval("SELECT value FROM stream_state WHERE id = 'pruned_through'")
    return int(value or 0)


async def prune_batch(tx: Executor, older_than_seconds: float, batch: int) -> tuple[int, int | None]:
    """Deletes up to `batch` of the oldest events older than the age, of every tenant (retention is one age for
    the whole log): (how many, the highest id removed or None)."""
    row = await tx.fetchrow(
        """WITH gone AS (
               DELETE FROM stream_event WHERE id IN (
                   SELECT id FROM stream_event WHERE created_at < now() - make_interval(secs => $1)
                   ORDER BY id LIMIT $2)
               RETURNING id)
           SELECT count(*) AS n, max(id) AS top FROM gone""",
        older_than_seconds,
        batch,
    )
    assert row is not None
    return int(row["n"]), row["top"]


async def note_pruned_through(tx: Executor, top: int) -> None:
    """Remembers `top` as pruned (never lowering the value already there)."""
    await tx.execute(
        """INSERT INTO stream_state (id, value) VALUES ('pruned_through', $1)
           ON CONFLICT (id) DO UPDATE SET value = greatest(stream_state.value, EXCLUDED.value)""",
        top,
    )


async def rewrite_message_events(
    tx: Executor, tenant_id: uuid.UUID, current: dict[str, dict[str, Any]]
) -> None:
    """The tenant's logged events carrying the content of the messages keyed in `current` (message id as text
    -> the snapshot fields that follow its text): `message.delta` events get an empty delta, snapshots get
    those fields merged into their `message` (events.scrub)."""
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
