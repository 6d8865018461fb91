"""SQL of the bulk write path (porting.bulk): many conversations per statement. Tenant first in every signature."""

from __future__ import annotations

import uuid
from collections.abc import Collection, Sequence
from typing import Any

import asyncpg
import orjson

from threadline import crypto
from threadline.conversations.repository import LABEL_VECTOR
from threadline.db import Executor, Transaction
from threadline.porting.chatgpt_nodes import FORGOTTEN, forgets
from threadline.threads.paths import ancestor_paths

# A message row as it is staged (its tenant is the statement's): metadata and parts travel as JSON text.
MESSAGE_STAGE_COLUMNS = (
    "id", "conversation_id", "root_id", "parent_id", "depth", "path", "seq", "child_count", "role", "content",
    "author_id", "model", "prompt_tokens", "completion_tokens", "created_at", "edited_at", "deleted_at",
    "usage_imported", "import_key", "metadata", "parts",
)  # fmt: skip

# Dropped at commit (or rollback): nothing outlives the transaction, so it works behind PgBouncer's transaction
# pooling too. Unlogged by nature (temporary): the COPY into it writes no WAL.
_STAGE = """CREATE TEMP TABLE IF NOT EXISTS import_message_stage (
    id uuid, conversation_id uuid, root_id uuid, parent_id uuid, depth integer, path bytea, seq bigint,
    child_count integer, role varchar(16), content text, author_id uuid, model varchar(128), prompt_tokens integer,
    completion_tokens integer, created_at timestamptz, edited_at timestamptz, deleted_at timestamptz,
    usage_imported boolean, import_key text, metadata text, parts text, plain text
) ON COMMIT DROP"""

# The stage is emptied by the statement that moves its rows (a second batch in the same transaction starts empty).
# Each row's search vector is built here, as the `message_search` trigger would (the same functions, the tenant's
# configuration read once instead of once a row); a row that brings its vector skips that trigger (migration
# 2026_12_07t01). The embeddings queue's statement trigger sees every row of the statement at once.
_MOVE = """WITH staged AS (DELETE FROM import_message_stage RETURNING *),
     cfg AS MATERIALIZED (SELECT threadline_search_config($1) AS c)
INSERT INTO message (id, tenant_id, conversation_id, root_id, parent_id, depth, path, seq, child_count, role, content,
    author_id, model, prompt_tokens, completion_tokens, created_at, edited_at, deleted_at, usage_imported,
    import_key, metadata, parts, search_vector)
SELECT s.id, $1, s.conversation_id, s.root_id, s.parent_id, s.depth, s.path, s.seq, s.child_count, s.role,
    s.content, s.author_id, s.model, s.prompt_tokens, s.completion_tokens, s.created_at, s.edited_at, s.deleted_at,
    s.usage_imported, s.import_key, s.metadata::jsonb, s.parts::jsonb,
    CASE WHEN s.deleted_at IS NOT NULL OR s.content = '' THEN NULL
         ELSE threadline_search_vector(cfg.c, coalesce(s.plain, s.content)) END
FROM staged s CROSS JOIN cfg"""


async def insert_messages(tx: Transaction, tenant_id: uuid.UUID, records: Sequence[tuple[Any, ...]]) -> None:
    """Message rows (MESSAGE_STAGE_COLUMNS) of one tenant: COPY into the stage, then one INSERT ... SELECT.
    With encryption at rest on (crypto/), content and parts are sealed as live writes seal them (the author's
    key, else the tenant's) before they are staged, and each row's vector is built from its plaintext, staged
    beside it (`plain`, dropped with the stage at commit)."""
    if not records:
        return
    columns: tuple[str, ...] = MESSAGE_STAGE_COLUMNS
    if crypto.sealing():
        records = await _sealed(tenant_id, records)
        columns = (*MESSAGE_STAGE_COLUMNS, "plain")
    await tx.execute(_STAGE)
    await tx.conn.copy_records_to_table("import_message_stage", records=records, columns=columns)
    await tx.execute(_MOVE, tenant_id)


_CONTENT = MESSAGE_STAGE_COLUMNS.index("content")
_AUTHOR = MESSAGE_STAGE_COLUMNS.index("author_id")
_PARTS = MESSAGE_STAGE_COLUMNS.index("parts")


async def _sealed(tenant_id: uuid.UUID, records: Sequence[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """Staged rows with content and parts sealed, and their plaintext (for the vector) appended."""
    by_author: dict[uuid.UUID | None, list[int]] = {}
    for i, r in enumerate(records):
        by_author.setdefault(r[_AUTHOR], []).append(i)
    contents: list[str] = [r[_CONTENT] for r in records]
    for author, indexes in by_author.items():  # one key look-up per author
        sealed = await crypto.seal_many(tenant_id, [contents[i] for i in indexes], author)
        for i, value in zip(indexes, sealed, strict=True):
            contents[i] = value
    out: list[tuple[Any, ...]] = []
    for r, stored in zip(records, contents, strict=True):
        row = list(r)
        row[_CONTENT] = stored
        if r[_PARTS] is not None:
            parts = await crypto.seal_parts(tenant_id, orjson.loads(r[_PARTS]), r[_AUTHOR])
            row[_PARTS] = orjson.dumps(parts).decode()
        row.append(crypto.plain_for_index(stored, r[_CONTENT]))
        out.append(tuple(row))
    return out


async def insert_conversations(
    db: Executor, tenant_id: uuid.UUID, owner_id: uuid.UUID, rows: list[dict[str, Any]]
) -> set[uuid.UUID]:
    """New conversations with their owner and their source, in one statement; the ids of those inserted. A
    conversation whose source this user imported already (a concurrent import, or twice in one file) is not
    inserted, and nothing of it is written. With titles sealed (THREADLINE_ENCRYPT_TITLES, crypto/), title and
    description are stored sealed and the vector is built from their plaintext, as `conversations.repository`
    writes a live conversation."""
    if not rows:
        return set()
    if crypto.sealing_titles():
        rows = [await _sealed_labels(tenant_id, row) for row in rows]
    claimed = await db.fetch(
        f"""WITH v AS MATERIALIZED (
               SELECT * FROM jsonb_to_recordset($3::jsonb) AS v(id uuid, source text, external_id text, title text,
                   description text, tags jsonb, status text, session_id text, ai_provider text, model text,
                   max_history_messages integer, message_count integer, token_count integer,
                   created_at timestamptz, updated_at timestamptz, last_activity_at timestamptz,
                   imported_from jsonb, node_digests jsonb, metadata jsonb, label text, plain_description text,
                   fingerprint text)
           ), src AS (
               INSERT INTO import_source (id, tenant_id, owner_id, source, external_id, conversation_id, node_digests,
                   fingerprint)
               SELECT gen_random_uuid(), $1, $2, v.source, v.external_id, v.id, v.node_digests,
                      decode(v.fingerprint, 'hex') FROM v
               ON CONFLICT (tenant_id, owner_id, source, external_id) DO NOTHING RETURNING conversation_id
           ), conv AS (
               INSERT INTO conversation (id, tenant_id, owner_id, title, description, tags, status, session_id,
                   ai_provider, model, max_history_messages, message_count, token_count, created_at, updated_at,
                   last_activity_at, imported_from, metadata, search_vector)
               SELECT v.id, $1, $2, v.title, v.description,
                      ARRAY(SELECT jsonb_array_elements_text(v.tags))::varchar[], v.status, v.session_id,
                      v.ai_provider, v.model, v.max_history_messages, v.message_count, v.token_count, v.created_at,
                      v.updated_at, v.last_activity_at, v.imported_from, v.metadata,
                      CASE WHEN v.label IS NOT NULL THEN {SEALED_LABEL_VECTOR} END
               FROM v WHERE v.id IN (SELECT conversation_id FROM src)
               RETURNING id
           ), owner AS (
               INSERT INTO participant (id, tenant_id, conversation_id, user_id, role)
               SELECT gen_random_uuid(), $1, conv.id, $2, 'OWNER' FROM conv
           )
           SELECT conversation_id FROM src""",
        tenant_id,
        owner_id,
        rows,
    )
    return {r["conversation_id"] for r in claimed}


# A conversation's vector from the plaintext of its sealed title (with its tags) and description.
SEALED_LABEL_VECTOR = LABEL_VECTOR.format(t="$1", label="v.label", description="v.plain_description")


async def _sealed_labels(tenant_id: uuid.UUID, row: dict[str, Any]) -> dict[str, Any]:
    return {
        **row,
        "title": await crypto.seal_title(tenant_id, row["title"]),
        "description": await crypto.seal_title(tenant_id, row["description"])
        if row["description"]
        else row["description"],
        "label": f"{row['title']} {' '.join(row['tags'])}",
        "plain_description": row["description"] or "",
    }


async def set_current_leaves(
    db: Executor,
    tenant_id: uuid.UUID,
    user_id: uuid.UUID,
    root_ids: list[uuid.UUID],
    message_ids: list[uuid.UUID],
) -> None:
    """The importing owner's current leaf in threads just imported (each new: nothing to replace), one statement;
    as `threads.branch_repository.set_current_leaf` writes it for one."""
    if root_ids:
        await db.execute(
            """INSERT INTO thread_current_leaf (id, tenant_id, user_id, root_id, message_id, updated_at)
               SELECT gen_random_uuid(), $1, $2, v.root_id, v.message_id, now()
               FROM unnest($3::uuid[], $4::uuid[]) AS v(root_id, message_id)""",
            tenant_id,
            user_id,
            root_ids,
            message_ids,
        )


async def insert_attachments(db: Executor, tenant_id: uuid.UUID, rows: list[dict[str, Any]]) -> None:
    """Attachments (message_id, position, data) of many messages in one statement; sealed when encryption at
    rest is on (crypto.seal_attachment)."""
    if rows and crypto.sealing():
        rows = [{**r, "data": await crypto.seal_attachment(tenant_id, r["data"])} for r in rows]
    if rows:
        await db.execute(
            """INSERT INTO message_attachment (id, tenant_id, message_id, position, data)
               SELECT gen_random_uuid(), $1, v.message_id, v.position, v.data
               FROM jsonb_to_recordset($2::jsonb) AS v(message_id uuid, position integer, data jsonb)""",
            tenant_id,
            rows,
        )


async def add_search_terms(db: Executor, tenant_id: uuid.UUID, labels: list[str]) -> None:
    """The words of conversations' titles and tags in the tenant's search lexicon, as the `conversation_search`
    trigger adds them (migration 2026_11_21t20_45), committed before a batch's transaction: that trigger then
    finds each word already there. A word inserted by a transaction still open makes every other transaction
    inserting it wait for its commit, so concurrent batches sharing a title word ("chat") would run one at a time.
    Sorted, so that two of these statements never wait on each other in a cycle."""
    if labels:
        await db.execute(
            """INSERT INTO search_term (tenant_id, term, trigrams)
               SELECT $1, x.w, threadline_trigrams(x.w) FROM (
                   SELECT DISTINCT w FROM unnest($2::text[]) AS l(label),
                       unnest(tsvector_to_array(to_tsvector('simple', l.label))) AS w
                   WHERE length(w) BETWEEN 3 AND 64 AND w ~ '^[[:alnum:]]+$'
               ) x ORDER BY x.w
               ON CONFLICT (tenant_id, term) DO NOTHING""",
            tenant_id,
            labels,
        )


# -- merges of many conversations (porting.merging) ---------------------------------------------------

# The text of a sealed row (encryption at rest, crypto/), which the pool's decoder opens: its md5 in SQL would be
# the ciphertext's, new with every seal, so merging compares the plaintext's (merging.stored_digest). NULL for
# plain rows: their md5 is compared as it is, and their text is not sent.
SEALED_TEXT = "CASE WHEN left(m.content, 5) = chr(30) || 'tl1:' THEN m.content END AS sealed"


async def merge_targets(
    db: Executor, tenant_id: uuid.UUID, conversation_ids: list[uuid.UUID]
) -> dict[uuid.UUID, list[asyncpg.Record]]:
    """`repository.merge_targets` of many conversations in one statement, by conversation."""
    rows = await db.fetch(
        f"""SELECT m.conversation_id, m.import_key, m.id, m.root_id, m.path, md5(m.content) AS digest,
                  m.deleted_at IS NOT NULL AS deleted, {SEALED_TEXT}
           FROM message m
           WHERE m.tenant_id = $1 AND m.conversation_id = ANY($2::uuid[])""",
        tenant_id,
        conversation_ids,
    )
    found: dict[uuid.UUID, list[asyncpg.Record]] = {c: [] for c in conversation_ids}
    for row in rows:
        found[row["conversation_id"]].append(row)
    return found


async def count_added(
    db: Executor, tenant_id: uuid.UUID, conversation_ids: list[uuid.UUID], added: list[int]
) -> None:
    """`conversations.repository.touch_activity` of many conversations (messages only, no tokens)."""
    await db.execute(
        """UPDATE conversation c SET message_count = c.message_count + v.n,
               last_activity_at = greatest(c.last_activity_at, now()), updated_at = now()
           FROM unnest($2::uuid[], $3::int[]) AS v(id, n) WHERE c.tenant_id = $1 AND c.id = v.id""",
        tenant_id,
        conversation_ids,
        added,
    )


async def move_current_leaves(
    db: Executor,
    tenant_id: uuid.UUID,
    user_id: uuid.UUID,
    root_ids: list[uuid.UUID],
    message_ids: list[uuid.UUID],
) -> list[tuple[uuid.UUID, uuid.UUID]]:
    """`threads.branch_repository.set_current_leaf` for many threads: (root, message) of each that moved."""
    if not root_ids:
        return []
    rows = await db.fetch(
        """INSERT INTO thread_current_leaf AS l (id, tenant_id, user_id, root_id, message_id, updated_at)
           SELECT gen_random_uuid(), $1, $2, v.root_id, v.message_id, now()
           FROM unnest($3::uuid[], $4::uuid[]) AS v(root_id, message_id)
           ON CONFLICT (user_id, root_id) DO UPDATE SET message_id = EXCLUDED.message_id, updated_at = now()
               WHERE l.message_id IS DISTINCT FROM EXCLUDED.message_id
           RETURNING l.root_id, l.message_id""",
        tenant_id,
        user_id,
        root_ids,
        message_ids,
    )
    return [(r["root_id"], r["message_id"]) for r in rows]


# Whether an import_source row's stored node digests forget a node (chatgpt_nodes.forgets, in SQL).
_FORGETS = f"""jsonb_path_exists(coalesce(s.node_digests, '{{}}'::jsonb), '$.* ? (@ == "{FORGOTTEN}")')"""


async def set_merged_sources(
    db: Executor,
    tenant_id: uuid.UUID,
    source: str,
    merged: dict[
        uuid.UUID, tuple[dict[str, str] | None, bytes | None, dict[str, str] | None, Collection[str]]
    ],
) -> None:
    """What merged conversations now hold came from these items: each one's node digests (`repository.
    set_node_digests`; None keeps the earlier ones) and fingerprint (None: not from a file's item), in one
    statement for many conversations. The third of each is the digests the merge started from (`seen`, read before
    its lock; None: unknown): only what differs from them travels, the changed and new nodes' digests and the nodes
    no longer there, applied to the digests stored now. A merge of a grown conversation sent and parsed every
    node's digest again (~110 a conversation) to change ten; a concurrent merge's digests of nodes this one did not
    change are kept (they are of what is stored). The fourth is the nodes whose messages the merge compared with
    those stored (its plan's): theirs travel too, whatever `seen` says, for the merge wrote them as this export has
    them. `seen` is read before the lock: another merge may have changed one of them since, and this one changed it
    back (its digest the same as in `seen`); the digest of the other merge's text stayed, and a later re-import of
    that text skipped the node as unchanged."""
    if not merged:
        return
    rows = []
    for c, (digests, fingerprint, seen, compared) in merged.items():
        row: dict[str, Any] = {
            "conversation_id": str(c),
            "f": fingerprint.hex() if fingerprint is not None else None,
        }
        if digests is None:
            row["keep"] = True
        elif seen is None:
            row["d"] = digests
        else:
            # A forgotten node's digest stays forgotten (its message was deleted here), and so does the fingerprint.
            row["changed"] = {
                k: d
                for k, d in digests.items()
                if (k in compared or seen.get(k) != d) and seen.get(k) != FORGOTTEN
            }
            row["gone"] = [k for k in seen if k not in digests]
            if forgets(seen):
                row["f"] = None
        rows.append(row)
    # A node forgotten since `seen` was read (its message deleted while this merge was under way: the delete takes
    # the message's lock, not the conversation's) stays forgotten, and a conversation whose stored digests forget a
    # node keeps no fingerprint (the rows a merge of new nodes reads need not hold that message). The stored digests
    # are read a fixed number of times a row: a lookup per changed key decompressed the whole map each time (a
    # 500-conversation merge spent 0.19 s in this statement, 0.1 s before the check).
    await db.execute(
        f"""UPDATE import_source s
           SET node_digests = CASE WHEN v.keep THEN s.node_digests
                                   WHEN v.d IS NOT NULL THEN v.d
                                   ELSE (coalesce(s.node_digests, '{{}}'::jsonb) - coalesce(v.gone, '{{}}'::text[]))
                                        || (v.changed - ARRAY(SELECT e.key FROM jsonb_each_text(s.node_digests) AS e
                                                              WHERE e.value = '{FORGOTTEN}')) END,
               fingerprint = CASE WHEN {_FORGETS} THEN NULL ELSE decode(v.f, 'hex') END
           FROM jsonb_to_recordset($3::jsonb)
                AS v(conversation_id uuid, keep boolean, d jsonb, changed jsonb, gone text[], f text)
           WHERE s.tenant_id = $1 AND s.source = $2 AND s.conversation_id = v.conversation_id""",
        tenant_id,
        source,
        rows,
    )


async def set_fingerprints(
    db: Executor, tenant_id: uuid.UUID, source: str, fingerprints: dict[uuid.UUID, bytes | None]
) -> None:
    """The fingerprint of the item each conversation was last merged from, or found unchanged in (None: an item
    without one, e.g. through the API: the earlier fingerprint no longer says what the conversation holds). Not of
    a conversation whose stored digests forget a node (a message deleted since the import read them)."""
    if fingerprints:
        await db.execute(
            f"""UPDATE import_source s SET fingerprint = v.f
               FROM unnest($3::uuid[], $4::bytea[]) AS v(conversation_id, f)
               WHERE s.tenant_id = $1 AND s.source = $2 AND s.conversation_id = v.conversation_id
                 AND s.fingerprint IS DISTINCT FROM v.f AND (v.f IS NULL OR NOT {_FORGETS})""",
            tenant_id,
            source,
            list(fingerprints),
            list(fingerprints.values()),
        )


async def sources_by_fingerprint(
    db: Executor, tenant_id: uuid.UUID, owner_id: uuid.UUID, source: str, fingerprints: list[bytes]
) -> dict[bytes, tuple[uuid.UUID, str]]:
    """The user's imported conversations (not deleted) last imported or merged from an item with one of these
    fingerprints (porting.jsonstream.fingerprint), by fingerprint: the same bytes again change nothing. Each as
    (conversation id, source id). A fingerprint more than one of them has is left out (its item goes the ordinary
    way)."""
    rows = await db.fetch(
        """SELECT s.fingerprint, min(s.conversation_id::text)::uuid AS conversation_id,
                  min(s.external_id) AS external_id, count(*) AS n
           FROM import_source s JOIN conversation c ON c.id = s.conversation_id AND c.status <> 'DELETED'
           WHERE s.tenant_id = $1 AND s.owner_id = $2 AND s.source = $3 AND s.fingerprint = ANY($4::bytea[])
           GROUP BY s.fingerprint""",
        tenant_id,
        owner_id,
        source,
        fingerprints,
    )
    return {bytes(r["fingerprint"]): (r["conversation_id"], r["external_id"]) for r in rows if r["n"] == 1}


async def merge_targets_by_key(
    db: Executor, tenant_id: uuid.UUID, conversation_ids: list[uuid.UUID], keys: list[list[str]]
) -> list[asyncpg.Record]:
    """`merge_targets` rows of only these source ids (keys[i] in conversation_ids[i]), one statement. The
    conversations' rows are found by the conversation index alone (OFFSET 0 keeps the tenant out of the scan) and
    the tenant checked on them: with the tenant in the scan the planner ANDed in the tenant's whole index (every
    message of the tenant), and a generic plan after a few runs did worse (5,000 rows of 50 conversations:
    6-30 ms -> 3-5 ms)."""
    return await db.fetch(
        f"""SELECT m.conversation_id, m.import_key, m.id, m.root_id, m.path, md5(m.content) AS digest,
                  m.deleted_at IS NOT NULL AS deleted, {SEALED_TEXT}
           FROM (SELECT * FROM message m WHERE m.conversation_id = ANY($4::uuid[]) OFFSET 0) m
           WHERE m.tenant_id = $1
             AND (m.conversation_id, m.import_key) IN (SELECT * FROM unnest($2::uuid[], $3::text[]))""",
        tenant_id,
        [c for c, ks in zip(conversation_ids, keys, strict=True) for _ in ks],
        [k for ks in keys for k in ks],
        conversation_ids,
    )


async def ancestor_ids(
    db: Executor, tenant_id: uuid.UUID, rows: list[asyncpg.Record]
) -> dict[uuid.UUID, list[uuid.UUID]]:
    """The ids on the path of each message row (id, root_id, path): its ancestors, root first, then itself (a
    merge's replies name their ancestors in their events). One statement: for each row, the range of the
    (root_id, path) index before it in its thread, its ancestors kept (their paths are prefixes of its path). In a
    chain that range is exactly the ancestors; at worst it is the thread's rows that sort before the message. (An
    index look-up of each ancestor's path instead made the planner hash-join the tenant's whole message table.) A
    row some ancestor of which is not found is left out."""
    if not rows:
        return {}
    found = await db.fetch(
        """SELECT k.id, ARRAY(
                   SELECT m.id FROM message m
                   WHERE m.root_id = k.root_id AND m.path < k.path AND m.tenant_id = $1
                     AND m.path = substring(k.path FROM 1 FOR length(m.path))
                   ORDER BY m.path) AS above
           FROM unnest($2::uuid[], $3::uuid[], $4::bytea[]) AS k(id, root_id, path)""",
        tenant_id,
        [r["id"] for r in rows],
        [r["root_id"] for r in rows],
        [bytes(r["path"]) for r in rows],
    )
    depth = {r["id"]: len(ancestor_paths(bytes(r["path"]))) for r in rows}
    return {f["id"]: [*f["above"], f["id"]] for f in found if len(f["above"]) == depth[f["id"]]}
