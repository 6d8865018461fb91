"""All SQL of search: full-text hits, the typo-tolerance lexicon, snippets and the search language.

Every query over conversations goes through `visibility_sql`, so a hit, a count or a snippet can
only come from a conversation the caller may read. Tenant (or the principal carrying it) first.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from threadline.auth.principal import Principal
from threadline.conversations.repository import CONVERSATION_COLUMNS, visibility_sql
from threadline.crypto.records import OpenedRecord
from threadline.db import Executor
from threadline.metadata.repository import conversations_holding
from threadline.threads.repository import MESSAGE_COLUMNS

# ts_headline marks matches with private-use characters; the service escapes the text as HTML and
# turns them into <mark> tags, so user text can never forge markup. Angle brackets are swapped for
# two more of them first, or ts_headline would drop anything that looks like an HTML tag.
MARK_START = "\ue000"
MARK_END = "\ue001"
LESS_THAN = "\ue002"
GREATER_THAN = "\ue003"
_HEADLINE_OPTIONS = f"StartSel={MARK_START}, StopSel={MARK_END}, MaxWords=30, MinWords=12"
# Snippet work per hit is bounded whatever the message's length: the first SNIPPET_SCAN_CHARS characters are
# scanned in chunks (to_tsvector, linear) for the first one holding a query word, and ts_headline (which
# is superlinear in the text's length and in the number of matches) runs on a window of about 1,500
# characters around it. A match further in leaves the snippet at the start of the text.
SNIPPET_SCAN_CHARS = 20_000
# ... and at most this many per page: a page of 100 hits scans the first 4,000 characters of each.
SNIPPET_SCAN_CHARS_PER_PAGE = 400_000
SNIPPET_CHUNK_CHARS = 1_000
# A word cut by a chunk's end is whole in the chunk before (words longer than this are rarely queried).
SNIPPET_CHUNK_OVERLAP = 64
SNIPPET_CONTEXT_CHARS = 200
SNIPPET_WINDOW_CHARS = SNIPPET_CHUNK_CHARS + SNIPPET_CHUNK_OVERLAP + 2 * SNIPPET_CONTEXT_CHARS


@dataclass(frozen=True)
class SearchFilters:
    """Normalised filters of `search` (every one optional but `statuses`)."""

    statuses: tuple[str, ...]
    tags: list[str] | None = None
    owner_id: uuid.UUID | None = None
    ai_provider: str | None = None
    min_messages: int | None = None
    metadata: dict[str, str] | None = None  # pairs the conversation's metadata must hold (`@>`, GIN-indexed)
    metadata_few: bool = True  # few conversations hold them: read their ids from the index first
    since: datetime | None = None
    until: datetime | None = None


# (score, last_activity_at, id): the order of every result list, all descending.
Position = tuple[float, datetime, uuid.UUID]


def _bind(params: list[Any], value: Any) -> str:
    """Add `value` to the statement's parameters; returns its placeholder (`$n`)."""
    params.append(value)
    return f"${len(params)}"


def _conversation_filters(principal: Principal, f: SearchFilters, params: list[Any]) -> str:
    where = [visibility_sql(principal, params)]
    where.append(f"c.status = ANY({_bind(params, list(f.statuses))}::varchar[])")
    if f.tags:
        where.append(f"c.tags @> {_bind(params, f.tags)}::varchar[]")
    if f.owner_id is not None:
        where.append(f"c.owner_id = {_bind(params, f.owner_id)}")
    if f.ai_provider is not None:
        where.append(f"lower(c.ai_provider) = lower({_bind(params, f.ai_provider)})")
    if f.min_messages is not None:
        where.append(f"c.message_count >= {_bind(params, f.min_messages)}")
    if f.metadata:
        where.append(conversations_holding("c", params, principal.tenant_id, f.metadata, few=f.metadata_few))
    # A conversation is in the window when it was alive during it: created before the end,
    # active after the start.
    if f.since is not None:
        where.append(f"c.last_activity_at >= {_bind(params, f.since)}")
    if f.until is not None:
        where.append(f"c.created_at < {_bind(params, f.until)}")
    return " AND ".join(where)


def _message_window(f: SearchFilters, params: list[Any]) -> str:
    where = []
    if f.since is not None:
        where.append(f"m.created_at >= {_bind(params, f.since)}")
    if f.until is not None:
        where.append(f"m.created_at < {_bind(params, f.until)}")
    return "".join(f" AND {w}" for w in where)


# The vector candidates of SEMANTIC and HYBRID search (embeddings.repository) use the same filters and visibility.
conversation_filters = _conversation_filters
message_window = _message_window


def _after(after: Position | None, params: list[Any], score: str) -> str:
    if after is None:
        return ""
    params.extend(after)
    n = len(params)
    return f"AND ({score}, c.last_activity_at, c.id) < (${n - 2}::float8, ${n - 1}, ${n})"


# (messages scanned newest first, matches kept): see `search.service` for when this cap applies.
RecentCap = tuple[int, int]


def _message_matches_sql(
    principal: Principal,
    f: SearchFilters,
    q: str,
    conversations: str,
    cap: RecentCap | None,
    params: list[Any],
) -> str:
    """Matching messages of readable, filtered conversations: all of them, or under `cap` only the
    most recent matches among the tenant's newest messages (an index-order scan, not the GIN index)."""
    tenant = _bind(params, principal.tenant_id)
    window = _message_window(f, params)
    if cap is None:
        return f"""SELECT m.conversation_id, m.id, m.search_vector, m.created_at
            FROM message m JOIN conversation c ON c.id = m.conversation_id
            WHERE m.tenant_id = {tenant} AND m.search_vector @@ {q} AND {conversations} {window}"""
    params.extend(cap)
    n = len(params)
    return f"""SELECT m.conversation_id, m.id, m.search_vector, m.created_at
            FROM (SELECT m.conversation_id, m.id, m.search_vector, m.created_at FROM message m
                  WHERE m.tenant_id = {tenant} {window} ORDER BY m.created_at DESC LIMIT ${n - 1}) m
            JOIN conversation c ON c.id = m.conversation_id
            WHERE m.search_vector @@ {q} AND {conversations}
            ORDER BY m.created_at DESC LIMIT ${n}"""


def _hits_sql(
    principal: Principal,
    f: SearchFilters,
    query: str,
    messages: bool,
    cap: RecentCap | None,
    params: list[Any],
) -> str:
    """Best score per matching conversation and its best-matching message (if any), unordered."""
    q = f"{_bind(params, query)}::tsquery"
    conversations = _conversation_filters(principal, f, params)
    message_branch = ""
    if messages:
        matches = _message_matches_sql(principal, f, q, conversations, cap, params)
        message_branch = f"""
            UNION ALL
            SELECT m.conversation_id, m.id, ts_rank(m.search_vector, {q})::float8, m.created_at
            FROM ({matches}) m"""
    return f"""
        SELECT conversation_id, max(score) AS score,
               (array_agg(message_id ORDER BY score DESC, at DESC)
                    FILTER (WHERE message_id IS NOT NULL))[1] AS message_id
        FROM (
            SELECT c.id AS conversation_id, NULL::uuid AS message_id,
                   ts_rank(c.search_vector, {q})::float8 AS score, NULL::timestamptz AS at
            FROM conversation c WHERE c.search_vector @@ {q} AND {conversations}
            {message_branch}
        ) hits
        GROUP BY conversation_id"""


async def recent_message_matches(
    db: Executor, principal: Principal, filters: SearchFilters, query: str, cap: RecentCap
) -> int:
    """How many matches (at most cap[1]) the newest cap[0] messages of the tenant hold for the caller."""
    params: list[Any] = []
    q = f"{_bind(params, query)}::tsquery"
    conversations = _conversation_filters(principal, filters, params)
    matches = _message_matches_sql(principal, filters, q, conversations, cap, params)
    return int(await db.fetchval(f"SELECT count(*) FROM ({matches}) m", *params))


async def text_hits(
    db: Executor,
    principal: Principal,
    filters: SearchFilters,
    query: str,
    *,
    messages: bool,
    cap: RecentCap | None,
    limit: int,
    after: Position | None,
) -> list[asyncpg.Record]:
    """Conversations matching the tsquery `query`, best first, newest first among equals."""
    params: list[Any] = []
    hits = _hits_sql(principal, filters, query, messages, cap, params)
    cond = _after(after, params, "r.score")
    params.append(limit)
    return await db.fetch(
        f"""SELECT {CONVERSATION_COLUMNS}, r.score, r.message_id
            FROM ({hits}) r JOIN conversation c ON c.id = r.conversation_id
            WHERE TRUE {cond}
            ORDER BY r.score DESC, c.last_activity_at DESC, c.id DESC LIMIT ${len(params)}""",
        *params,
    )


async def count_text_hits(
    db: Executor,
    principal: Principal,
    filters: SearchFilters,
    query: str,
    *,
    messages: bool,
    cap: RecentCap | None,
) -> int:
    params: list[Any] = []
    hits = _hits_sql(principal, filters, query, messages, cap, params)
    return int(await db.fetchval(f"SELECT count(*) FROM ({hits}) r", *params))


async def recent(
    db: Executor, principal: Principal, filters: SearchFilters, *, limit: int, after: Position | None
) -> list[asyncpg.Record]:
    """Conversations matching the filters, most recent activity first (a search without words)."""
    params: list[Any] = []
    where = _conversation_filters(principal, filters, params)
    cond = _after(after, params, "0::float8")
    params.append(limit)
    return await db.fetch(
        f"""SELECT {CONVERSATION_COLUMNS}, 0::float8 AS score, NULL::uuid AS message_id
            FROM conversation c WHERE {where} {cond}
            ORDER BY c.last_activity_at DESC, c.id DESC LIMIT ${len(params)}""",
        *params,
    )


async def count_recent(db: Executor, principal: Principal, filters: SearchFilters) -> int:
    params: list[Any] = []
    where = _conversation_filters(principal, filters, params)
    return int(await db.fetchval(f"SELECT count(*) FROM conversation c WHERE {where}", *params))


async def plan_with_actual_values(tx: Executor) -> None:
    """Plan this transaction's statements for their actual values, never with a cached generic plan,
    and without parallel workers.

    How selective a search is swings by orders of magnitude with its words and its caller; a
    generic plan made for unknown values can take seconds where the custom one takes milliseconds.
    """
    await tx.execute("SET LOCAL plan_cache_mode = force_custom_plan")
    # An API answers many small searches at once: parallel workers cost more to start than they save.
    await tx.execute("SET LOCAL max_parallel_workers_per_gather = 0")


async def parse_query(db: Executor, tenant_id: uuid.UUID, text: str) -> asyncpg.Record:
    """The tenant's configuration and the tsquery of `text`: its text, size, whether an index can serve it
    and its words that are not excluded (`positive`)."""
    row = await db.fetchrow(
        """SELECT x.cfg::text AS config, x.q::text AS query, numnode(x.q) AS nodes,
                  querytree(x.q) NOT IN ('T', '') AS indexable, querytree(x.q) AS positive
           FROM (SELECT c.cfg, threadline_search_query(c.cfg, $2) AS q
                 FROM (SELECT threadline_search_config($1) AS cfg) c) x""",
        tenant_id,
        text,
    )
    assert row is not None
    return row


async def similar_terms(
    db: Executor, tenant_id: uuid.UUID, words: list[str], threshold: float, per_word: int, candidates: int
) -> list[asyncpg.Record]:
    """For each word, the tenant's title and tag words closest to it by trigram similarity, among at most
    `candidates` of them per word.

    The lexicon grows with every title and tag (a user adds a hundred words a request), so the words a similarity
    is computed for are bounded: 100,000 terms sharing a word's first letters took 1.7 s per word (past the bound,
    the closest term may be missed). They are narrowed without loss first. A term as similar as `threshold` shares at least ceil(threshold * n) of the
    word's n trigrams, so it shares one of any n - ceil(threshold * n) + 1 of them: the two that begin the word
    ('  a', ' ab'), which every word starting like it has, are left out of the probe when that still holds.
    (`OFFSET 0`: each word's trigrams are computed once, not again for every term compared.)"""
    return await db.fetch(
        """SELECT q.word, t.term, t.similarity
           FROM unnest($2::text[]) AS q(word)
           CROSS JOIN LATERAL (SELECT threadline_trigrams(q.word) AS grams OFFSET 0) g
           CROSS JOIN LATERAL (
               SELECT CASE WHEN cardinality(i.grams) > 0
                            AND cardinality(g.grams) - cardinality(i.grams)
                                <= ceil($3::float8 * cardinality(g.grams) - 1e-9) - 1
                           THEN i.grams ELSE g.grams END AS grams
               FROM (SELECT ARRAY(SELECT x FROM unnest(g.grams) AS x WHERE x NOT LIKE ' %') AS grams) i
               OFFSET 0
           ) p
           CROSS JOIN LATERAL (
               SELECT c.term, c.similarity
               FROM (SELECT s.term, threadline_trigram_similarity(s.trigrams, g.grams) AS similarity
                     FROM search_term s
                     WHERE s.tenant_id = $1 AND s.trigrams && p.grams
                           AND abs(length(s.term) - length(q.word)) <= 3
                     LIMIT $5) c
               WHERE c.similarity >= $3::float8
               ORDER BY c.similarity DESC, c.term LIMIT $4
           ) t""",
        tenant_id,
        words,
        threshold,
        per_word,
        candidates,
    )


async def hit_details(
    db: Executor,
    tenant_id: uuid.UUID,
    config: str,
    highlight: str | None,
    conversation_ids: list[uuid.UUID],
    message_ids: list[uuid.UUID | None],
) -> list[asyncpg.Record]:
    """Per hit, in order: the best message's columns (NULLs if none) and a marked-up snippet.

    The snippet comes from the message, or else from the conversation's title, description and
    tags; without words to highlight (`highlight`: a tsquery OR-ing the query's words) it is the
    plain start of that text.
    """
    params: list[Any] = [
        conversation_ids,
        message_ids,
        tenant_id,
        "<>" + MARK_START + MARK_END + LESS_THAN + GREATER_THAN,
        LESS_THAN + GREATER_THAN,
    ]
    body = """coalesce(m.content,
                    c.title || E'\\n' || c.description || E'\\n' || array_to_string(c.tags, ' '))"""
    window = ""
    if highlight is None:
        snippet = "translate(left(s.body, 240), $4, $5)"
    else:
        params.extend(
            [
                config,
                highlight,
                _HEADLINE_OPTIONS,
                min(SNIPPET_SCAN_CHARS, SNIPPET_SCAN_CHARS_PER_PAGE // max(len(conversation_ids), 1)),
                SNIPPET_CHUNK_CHARS,
                SNIPPET_CHUNK_CHARS + SNIPPET_CHUNK_OVERLAP,
                SNIPPET_CONTEXT_CHARS,
                SNIPPET_WINDOW_CHARS,
            ]
        )
        # generate_series yields the chunks in order and LIMIT 1 stops at the first match (no sort).
        # A window that starts inside the text drops its first (likely cut) word.
        window = """CROSS JOIN LATERAL (
                SELECT coalesce((SELECT g.at FROM generate_series(1, least(length(s.body), $9), $10) AS g(at)
                                 WHERE to_tsvector($6::regconfig, substr(s.body, g.at, $11)) @@ $7::tsquery
                                 LIMIT 1), 1) AS at) f
            CROSS JOIN LATERAL (
                SELECT CASE WHEN f.at > $12 THEN regexp_replace(substr(s.body, f.at - $12, $13), '^\\S*\\s+', '')
                            ELSE substr(s.body, 1, $13) END AS text) w"""
        snippet = "ts_headline($6::regconfig, translate(w.text, $4, $5), $7::tsquery, $8)"
    rows = await db.fetch(
        f"""SELECT k.ord, {snippet} AS snippet, {MESSAGE_COLUMNS},
                   left(s.body, 5) = chr(30) || 'tl1:' AS sealed_body,
                   c.title AS label_title, c.description AS label_description, c.tags AS label_tags
            FROM unnest($1::uuid[], $2::uuid[]) WITH ORDINALITY AS k(conversation_id, message_id, ord)
            JOIN conversation c ON c.id = k.conversation_id AND c.tenant_id = $3
            LEFT JOIN message m ON m.id = k.message_id AND m.tenant_id = $3
            CROSS JOIN LATERAL (SELECT {body} AS body) s
            {window}
            ORDER BY k.ord""",
        *params,
    )
    if any(r["sealed_body"] for r in rows):
        return [_sealed_snippet(r, highlight) if r["sealed_body"] else r for r in rows]
    return rows


def _sealed_snippet(row: asyncpg.Record, highlight: str | None) -> Any:
    """The row with its snippet made here from the opened text: SQL saw only the sealed value (crypto/). The
    words of `highlight` are marked where a word of the text starts with one (the index's stems), in a window
    around the first one, like ts_headline's."""
    text = row["content"]
    if text is None:
        text = "\n".join(
            [row["label_title"], row["label_description"] or "", " ".join(row["label_tags"] or [])]
        )
    text = text[:SNIPPET_SCAN_CHARS]
    stems = [w.lower() for w in re.findall(r"'((?:[^']|'')+)'", highlight or "")]
    words = list(re.finditer(r"\w+", text))
    hits = [m for m in words if any(m.group().lower().startswith(stem) for stem in stems)]
    if not hits:
        window = text[:240]
        marked = _translate(window)
    else:
        start = max(hits[0].start() - SNIPPET_CONTEXT_CHARS // 2, 0)
        end = min(start + 2 * SNIPPET_CONTEXT_CHARS, len(text))
        out: list[str] = []
        at = start
        for m in hits:
            if m.start() < start or m.end() > end:
                continue
            out.append(_translate(text[at : m.start()]) + MARK_START + _translate(m.group()) + MARK_END)
            at = m.end()
        out.append(_translate(text[at:end]))
        marked = "".join(out)
    names = list(row.keys())
    values = [marked if name == "snippet" else value for name, value in zip(names, row.values(), strict=True)]
    return OpenedRecord(names, values)


_SNIPPET_TABLE = str.maketrans({"<": LESS_THAN, ">": GREATER_THAN, MARK_START: None, MARK_END: None})


def _translate(text: str) -> str:
    return text.replace(LESS_THAN, "").replace(GREATER_THAN, "").translate(_SNIPPET_TABLE)


async def search_language(db: Executor, tenant_id: uuid.UUID) -> str:
    return str(await db.fetchval("SELECT threadline_search_config($1)::text", tenant_id))


async def available_languages(db: Executor) -> list[str]:
    rows = await db.fetch(
        "SELECT cfgname FROM pg_ts_config WHERE cfgnamespace = 'pg_catalog'::regnamespace ORDER BY cfgname"
    )
    return [r["cfgname"] for r in rows]


async def set_search_language(db: Executor, tenant_id: uuid.UUID, language: str) -> None:
    """Store the tenant's language and rewrite its vectors with it (one transaction, no drift)."""
    await db.execute(
        """UPDATE tenant SET settings = coalesce(settings, jsonb_build_object())
               || jsonb_build_object('searchLanguage', $2::text) WHERE id = $1""",
        tenant_id,
        language,
    )
    # The conversation trigger recomputes on any write of these columns, values unchanged.
    await db.execute("UPDATE conversation SET title = title WHERE tenant_id = $1", tenant_id)
    await db.execute(
        """UPDATE message SET search_vector = threadline_search_vector(threadline_search_config($1), content)
           WHERE tenant_id = $1 AND search_vector IS NOT NULL AND left(content, 5) <> chr(30) || 'tl1:'""",
        tenant_id,
    )
    # Sealed rows (crypto/): from their plaintext, which the pool's decoder opens as they are read.
    await db.execute(
        """UPDATE message m SET search_vector = threadline_search_vector(threadline_search_config($1), v.body)
           FROM unnest($2::uuid[], $3::text[]) AS v(id, body)
           WHERE m.id = v.id AND m.tenant_id = $1""",
        tenant_id,
        *await _sealed_bodies(db, tenant_id),
    )


async def _sealed_bodies(db: Executor, tenant_id: uuid.UUID) -> tuple[list[uuid.UUID], list[str]]:
    rows = await db.fetch(
        """SELECT id, content FROM message
           WHERE tenant_id = $1 AND search_vector IS NOT NULL AND left(content, 5) = chr(30) || 'tl1:'""",
        tenant_id,
    )
    return [r["id"] for r in rows], [r["content"] for r in rows]
