"""Search rules: query parsing, text search with a typo-tolerant fallback, snippets, the search language.

A search runs in one of three modes, carried in its cursors so that later pages continue the same
way: TEXT (full-text over titles, descriptions, tags and messages), FUZZY (no TEXT hit at all: the
query's words are corrected against the tenant's title and tag words, then searched again over
conversations), RECENT (no words: the filters alone, most recent activity first).

With embeddings configured (threadline.embeddings), a search with words may instead be SEMANTIC (the
conversations holding the message chunks nearest to the query's vector) or HYBRID (the default then: the
keyword candidates, TEXT or else FUZZY, and the vector candidates fused by reciprocal rank). Both are bounded
to the best CANDIDATE_CONVERSATIONS of each list; the fused list is recomputed per page and the cursor
continues it.
"""

from __future__ import annotations

import asyncio
import html
import re
import unicodedata
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager, suppress
from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum

import asyncpg

from threadline.auth.principal import Principal
from threadline.db import Database, Executor
from threadline.embeddings.fusion import Candidate, Fused, fuse
from threadline.embeddings.repository import NearConversation, conversations_by_id
from threadline.embeddings.service import CANDIDATE_CONVERSATIONS, Embeddings, semantic_candidates
from threadline.errors import bad_input, forbidden
from threadline.metadata import repository as metadata_repo
from threadline.metadata.service import FEW_HOLDERS
from threadline.search import repository as repo
from threadline.search.repository import (
    GREATER_THAN,
    LESS_THAN,
    MARK_END,
    MARK_START,
    Position,
    RecentCap,
    SearchFilters,
)
from threadline.threads.service import path_ids

QUERY_MAX_CHARS = 10_000
# Words after the 32nd are ignored, like web search engines do: each word is a posting list to
# intersect and a term to test on every candidate, so a pasted page would cost seconds. A word is what
# the text search parser makes a lexeme of, a run of letters and digits: "a,b,c" or "a-b-c" is three
# (a phrase of three), not one (1,800 of them joined by commas cost 40 ms per matching message).
QUERY_MAX_WORDS = 32
# Combining marks (Hindi's vowel signs and virama, Arabic's harakat, Thai's vowels, NFD accents) are part of a word
# for the parser ("हिन्दी" is one lexeme): counted as separators they made a word of two to five, so an ordinary
# Hindi or Arabic query was cut after a dozen words, inside a word. A few rare marks do split a lexeme, and a
# parser in another locale may split at more, so the runs of letters and digits alone are bounded too, by this.
QUERY_MAX_PIECES = 4 * QUERY_MAX_WORDS
# A query matching at least 0.5% of the tenant's newest messages (25 of the newest 5,000: the probe) is
# ranked over its 300 most recent matches among the newest 30,000 messages, plus every title,
# description and tag match. Ranking every match of a word found in 100,000 messages would read
# 100,000 scattered heap pages; this reads a few hundred recent ones. Rarer queries rank every
# match exactly, through the GIN index.
RECENT_PROBE: RecentCap = (5_000, 25)
RECENT_CAP: RecentCap = (30_000, 300)
# HYBRID: the vector candidates are found beside the keyword ones, on a second pooled connection when one is idle
# (bench/semantic.py measures it against one after the other, which setting this False restores).
CONCURRENT_CANDIDATES = True
FUZZY_THRESHOLD = 0.4
FUZZY_TERMS_PER_WORD = 3
FUZZY_MAX_WORDS = 8
# Lexicon terms whose similarity is computed per word (see `repository.similar_terms`): ~15 ms of work at most.
FUZZY_CANDIDATES_PER_WORD = 2_000
_WORD = re.compile(r"(?<![^\W_])[^\W_]{3,64}(?![^\W_])")
_LETTER_OR_DIGIT = re.compile(r"[^\W_]")
# A word excluded web-search style ("-word" at the start of a token).
_EXCLUDED = re.compile(r"(?<!\S)-\S+")
_UNSENDABLE = re.compile(r"[\x00\ud800-\udfff]")
# A lexeme as tsquery text prints it: quoted, quotes doubled, backslashes escaped, maybe a weight or prefix mark.
_LEXEME = re.compile(r"'(?:[^'\\]|''|\\.)*'(?::[*A-D]+)?")


class SearchMode(StrEnum):
    TEXT = "TEXT"
    FUZZY = "FUZZY"
    RECENT = "RECENT"
    SEMANTIC = "SEMANTIC"
    HYBRID = "HYBRID"


class Retrieval(StrEnum):
    """What a search with words looks at: keywords, vectors, or both fused."""

    KEYWORD = "KEYWORD"
    SEMANTIC = "SEMANTIC"
    HYBRID = "HYBRID"


# Reciprocal rank fusion's constant (Cormack et al. 2009): a candidate's score is the sum of 1 / (RRF_K + rank).
RRF_K = 60
_FUSED = {Retrieval.SEMANTIC: SearchMode.SEMANTIC, Retrieval.HYBRID: SearchMode.HYBRID}


@dataclass(frozen=True)
class Continuation:
    """What a cursor carries: how the search ran, so that later pages continue the same way."""

    mode: SearchMode
    capped: bool
    position: Position


@dataclass(frozen=True)
class SearchRequest:
    query: str | None
    filters: SearchFilters
    limit: int
    after: Continuation | None = None
    retrieval: Retrieval | None = None  # None: HYBRID when embeddings are configured, else KEYWORD


@dataclass(frozen=True)
class SearchHit:
    mode: SearchMode
    capped: bool
    conversation: asyncpg.Record
    score: float
    snippet: str
    message: asyncpg.Record | None
    message_path: list[uuid.UUID]
    matched: SearchMode | None = None  # which part found it, when the search fused (else `mode`)
    keyword_rank: int | None = None  # its rank among the keyword candidates (1 is best), if one
    semantic_rank: int | None = None  # its rank among the vector candidates, if one

    @property
    def continuation(self) -> Continuation:
        position = (self.score, self.conversation["last_activity_at"], self.conversation["id"])
        return Continuation(self.mode, self.capped, position)


@dataclass(frozen=True)
class SearchPage:
    """`limit` hits with details, plus one bare extra hit when there is a next page."""

    hits: list[SearchHit]
    count: Callable[[], Awaitable[int]]


def check_window(since: datetime | None, until: datetime | None) -> None:
    if since is not None and until is not None and since > until:
        raise bad_input("`from` must not be after `to`", argument="from")


def _clean(query: str | None) -> str:
    if query is None:
        return ""
    if len(query) > QUERY_MAX_CHARS:
        raise bad_input(
            f"query is limited to {QUERY_MAX_CHARS} characters (got {len(query)})",
            argument="query",
            limit=QUERY_MAX_CHARS,
        )
    # NUL and lone surrogates cannot reach PostgreSQL text: they would fail the request.
    text = " ".join(sendable(query).split()[:QUERY_MAX_WORDS])
    return _first_words(_first_words(text, QUERY_MAX_WORDS, marks=True), QUERY_MAX_PIECES, marks=False)


def _first_words(text: str, limit: int, marks: bool) -> str:
    """`text` up to its `limit`th word: a run of letters and decimal digits, and of combining marks with `marks`.
    Other characters, even those Python calls alphanumeric (², ①), may split a word for the text search parser,
    so they end one here too."""
    count, inside = 0, False
    for at, char in enumerate(text):
        letter = (
            char.isalpha() or char.isdecimal() or (marks and inside and unicodedata.category(char)[0] == "M")
        )
        if letter and not inside:
            count += 1
            if count > limit:
                return text[:at]
        inside = letter
    return text


def sendable(text: str) -> str:
    """`text` without NUL and lone surrogates (PostgreSQL text cannot hold them)."""
    return _UNSENDABLE.sub(" ", text)


def highlight_query(query: str | None) -> str | None:
    """The distinct words of tsquery text `query`, OR-ed: what a snippet marks.

    ts_headline on the query itself can take exponential time in its structure ("a b or a b or ...":
    minutes for one 2,000-character message); on a flat OR of distinct words it is linear.
    """
    lexemes = list(dict.fromkeys(_LEXEME.findall(query or "")))
    return " | ".join(lexemes) or None


def mark_up(snippet: str) -> str:
    """HTML-escaped text with matches wrapped in <mark> (user text can never forge markup)."""
    escaped = html.escape(snippet, quote=False)
    for private, public in (
        (LESS_THAN, "&lt;"),
        (GREATER_THAN, "&gt;"),
        (MARK_START, "<mark>"),
        (MARK_END, "</mark>"),
    ):
        escaped = escaped.replace(private, public)
    return escaped


@asynccontextmanager
async def planned(db: Database) -> AsyncIterator[Executor]:
    """A transaction whose statements are planned for their actual values (see the repository)."""
    async with db.transaction() as tx:
        await repo.plan_with_actual_values(tx)
        yield tx


async def search(
    db: Database, principal: Principal, request: SearchRequest, embeddings: Embeddings | None = None
) -> SearchPage:
    text = _clean(request.query)
    check_window(request.filters.since, request.filters.until)
    retrieval = request.retrieval or (Retrieval.HYBRID if embeddings is not None else Retrieval.KEYWORD)
    if retrieval is not Retrieval.KEYWORD and embeddings is None:
        raise bad_input(
            f"{retrieval.value} search needs an embeddings provider, and none is configured "
            "(THREADLINE_EMBEDDINGS); use KEYWORD",
            argument="mode",
        )
    request = replace(request, retrieval=retrieval)
    if request.filters.metadata:
        # As conversations(metadata:): ids from the GIN index first only when few conversations hold the pairs.
        few = await metadata_repo.held_by_at_most(
            db, principal.tenant_id, request.filters.metadata, FEW_HOLDERS
        )
        request = replace(request, filters=replace(request.filters, metadata_few=few))
    async with planned(db) as tx:
        return await _search(tx, db, principal, request, text, embeddings)


async def _search(
    tx: Executor,
    db: Database,
    principal: Principal,
    request: SearchRequest,
    text: str,
    embeddings: Embeddings | None = None,
) -> SearchPage:
    has_words = _LETTER_OR_DIGIT.search(text) is not None
    cont = request.after
    if cont is not None and (cont.mode is SearchMode.RECENT) == has_words:
        raise bad_input("This cursor belongs to a different search", argument="after")
    fused = _FUSED.get(request.retrieval or Retrieval.KEYWORD)
    if has_words and cont is not None and (fused is not None or cont.mode in _FUSED.values()):
        if cont.mode is not fused:
            raise bad_input("This cursor belongs to a different search", argument="after")
    after = cont.position if cont is not None else None
    if not has_words:
        # Nothing but quotes and operators: treated like an empty query.
        return await _page(tx, db, principal, request, SearchMode.RECENT, None, "simple", None, after)
    if fused is not None and embeddings is not None:
        return await _fused_page(tx, db, principal, request, text, fused, embeddings, after)

    parsed = await repo.parse_query(tx, principal.tenant_id, text)
    if parsed["nodes"] > 0 and not parsed["indexable"]:
        raise bad_input(
            "Add a word to look for: exclusions (-word) alone cannot be searched", argument="query"
        )
    config = parsed["config"]
    # No lexeme at all (e.g. only words too long to index): nothing can match exactly.
    if parsed["nodes"] > 0 and (cont is None or cont.mode is SearchMode.TEXT):
        if cont is not None:
            capped = cont.capped
        else:
            found = await repo.recent_message_matches(
                tx, principal, request.filters, parsed["query"], RECENT_PROBE
            )
            capped = found >= RECENT_PROBE[1]
        page = await _page(
            tx,
            db,
            principal,
            request,
            SearchMode.TEXT,
            parsed["query"],
            config,
            RECENT_CAP if capped else None,
            after,
            highlight=highlight_query(parsed["positive"]),
        )
        if page.hits or after is not None:
            return page
    # The lexicon lookup calls SQL functions per candidate: left to the default (cached) plans.
    fuzzy = await _fuzzy_query(db, principal.tenant_id, text)
    # Corrected words are exact ('simple') lexemes: a stemming parser would not mark them.
    return await _page(tx, db, principal, request, SearchMode.FUZZY, fuzzy, "simple", None, after)


async def _fuzzy_query(db: Executor, tenant_id: uuid.UUID, text: str) -> str | None:
    """A tsquery of known title and tag words close to the query's words: AND of each word's ORs."""
    words = list(dict.fromkeys(w.lower() for w in _WORD.findall(text)))[:FUZZY_MAX_WORDS]
    if not words:
        return None
    found: dict[str, list[str]] = {}
    for row in await repo.similar_terms(
        db, tenant_id, words, FUZZY_THRESHOLD, FUZZY_TERMS_PER_WORD, FUZZY_CANDIDATES_PER_WORD
    ):
        found.setdefault(row["word"], []).append(row["term"])
    if not found:
        return None
    # Lexicon terms are alphanumeric only, so quoting them as tsquery literals is safe.
    return " & ".join("(" + " | ".join(f"'{t}'" for t in terms) + ")" for terms in found.values())


async def _page(
    tx: Executor,
    db: Database,
    principal: Principal,
    request: SearchRequest,
    mode: SearchMode,
    query: str | None,
    config: str,
    cap: RecentCap | None,
    after: Position | None,
    highlight: str | None = None,
) -> SearchPage:
    """A page of hits; snippets mark the words of `highlight` (default: those of `query`)."""
    filters, limit = request.filters, request.limit
    if mode is SearchMode.RECENT:
        rows = await repo.recent(tx, principal, filters, limit=limit + 1, after=after)

        async def count() -> int:
            async with planned(db) as counting:
                return await repo.count_recent(counting, principal, filters)

    elif query is None:
        rows = []

        async def count() -> int:
            return 0

    else:
        messages = mode is SearchMode.TEXT
        rows = await repo.text_hits(
            tx, principal, filters, query, messages=messages, cap=cap, limit=limit + 1, after=after
        )

        async def count() -> int:
            async with planned(db) as counting:
                return await repo.count_text_hits(
                    counting, principal, filters, query, messages=messages, cap=cap
                )

    shown = rows[:limit]
    details = (
        await repo.hit_details(
            tx,
            principal.tenant_id,
            config,
            highlight or highlight_query(query),
            [r["id"] for r in shown],
            [r["message_id"] for r in shown],
        )
        if shown
        else []
    )
    messages_found = [d for d in details if d["id"] is not None]
    paths = dict(
        zip(
            (d["id"] for d in messages_found),
            await path_ids(tx, principal.tenant_id, messages_found),
            strict=True,
        )
    )
    hits = [
        SearchHit(
            mode=mode,
            capped=cap is not None,
            conversation=row,
            score=row["score"],
            snippet=mark_up(detail["snippet"]),
            message=detail if detail["id"] is not None else None,
            message_path=paths.get(detail["id"], []),
        )
        for row, detail in zip(shown, details, strict=True)
    ]
    hits.extend(SearchHit(mode, cap is not None, row, row["score"], "", None, []) for row in rows[limit:])
    return SearchPage(hits=hits, count=count)


async def search_language(db: Executor, principal: Principal) -> tuple[str, list[str]]:
    return await repo.search_language(db, principal.tenant_id), await repo.available_languages(db)


async def set_search_language(db: Database, principal: Principal, language: str) -> tuple[str, list[str]]:
    """Admins pick the tenant's stemming language; every vector of the tenant is rebuilt at once."""
    if not principal.is_admin:
        raise forbidden("Only a tenant admin may change the search language")
    available = await repo.available_languages(db)
    language = language.strip().lower()
    if language not in available:
        raise bad_input(f"Unknown search language {language[:64]!r}; one of {available}", argument="language")
    async with db.transaction() as tx:
        await repo.set_search_language(tx, principal.tenant_id, language)
    return language, available


async def _keyword_candidates(
    tx: Executor, db: Database, principal: Principal, request: SearchRequest, text: str, fuzzy_too: bool
) -> tuple[list[asyncpg.Record], SearchMode, str, str | None]:
    """The best keyword candidates as KEYWORD search ranks them (TEXT, else FUZZY when `fuzzy_too`), with the
    mode, the text search configuration and the words snippets mark. An exclusion-only query has none."""
    parsed = await repo.parse_query(tx, principal.tenant_id, text)
    config = parsed["config"]
    if parsed["nodes"] > 0 and parsed["indexable"]:
        found = await repo.recent_message_matches(
            tx, principal, request.filters, parsed["query"], RECENT_PROBE
        )
        rows = await repo.text_hits(
            tx,
            principal,
            request.filters,
            parsed["query"],
            messages=True,
            cap=RECENT_CAP if found >= RECENT_PROBE[1] else None,
            limit=CANDIDATE_CONVERSATIONS,
            after=None,
        )
        if rows:
            return rows, SearchMode.TEXT, config, highlight_query(parsed["positive"])
    if (parsed["nodes"] > 0 and not parsed["indexable"]) or not fuzzy_too:
        return [], SearchMode.TEXT, config, None
    fuzzy = await _fuzzy_query(db, principal.tenant_id, text)
    if fuzzy is None:
        return [], SearchMode.FUZZY, "simple", None
    rows = await repo.text_hits(
        tx,
        principal,
        request.filters,
        fuzzy,
        messages=False,
        cap=None,
        limit=CANDIDATE_CONVERSATIONS,
        after=None,
    )
    return rows, SearchMode.FUZZY, "simple", highlight_query(fuzzy)


async def _fused_page(
    tx: Executor,
    db: Database,
    principal: Principal,
    request: SearchRequest,
    text: str,
    mode: SearchMode,
    embeddings: Embeddings,
    after: Position | None,
) -> SearchPage:
    """A page of a SEMANTIC or HYBRID search: the vector candidates (and the keyword ones, fused by RRF).

    Exclusions (-word) hold for both lists: they are left out of the text embedded (an excluded word draws no
    match by meaning) and messages holding one are no vector candidates."""
    meaning = " ".join(_EXCLUDED.sub(" ", text).split())
    if _LETTER_OR_DIGIT.search(meaning) is None:
        raise bad_input(
            "Add a word to look for: exclusions (-word) alone cannot be searched", argument="query"
        )
    excluded_words = [w[1:] for w in _EXCLUDED.findall(text) if _LETTER_OR_DIGIT.search(w)]
    excluded = None
    if excluded_words:
        parsed = await repo.parse_query(tx, principal.tenant_id, " OR ".join(excluded_words))
        excluded = parsed["query"] if parsed["nodes"] > 0 else None
    keyword: list[asyncpg.Record] = []
    keyword_mode, config, highlight = SearchMode.TEXT, "simple", None
    async with AsyncExitStack() as apart:
        beside: asyncio.Task[list[NearConversation]] | None = None
        if mode is SearchMode.HYBRID and CONCURRENT_CANDIDATES and db.pool.get_idle_size() > 0:
            # The vector candidates (the query's embedding, then its statements) in a transaction of their own
            # while this one finds the keyword candidates. Its connection is taken here, while one is idle (the
            # pool hands it over without yielding to other requests), so this search never waits for a second
            # connection while it holds one. Both lists are read as before, each statement in its own snapshot
            # (READ COMMITTED); the page's conversations are read again below, under the caller's visibility.
            vectors = await apart.enter_async_context(planned(db))
            beside = asyncio.create_task(
                semantic_candidates(vectors, principal, request.filters, embeddings, meaning, excluded)
            )
        try:
            if mode is SearchMode.HYBRID:
                keyword, keyword_mode, config, highlight = await _keyword_candidates(
                    tx, db, principal, request, text, fuzzy_too=False
                )
            if beside is not None:
                nearest = await beside
            else:
                nearest = await semantic_candidates(
                    tx, principal, request.filters, embeddings, meaning, excluded
                )
        finally:
            if beside is not None and not beside.done():
                beside.cancel()
                with suppress(asyncio.CancelledError):
                    await beside
    if mode is SearchMode.HYBRID and not keyword and not nearest:
        # As in KEYWORD search, titles and tags are matched tolerantly of typos only when nothing else matched:
        # fused with vector candidates, a loose title match would outrank what the query is about.
        keyword, keyword_mode, config, highlight = await _keyword_candidates(
            tx, db, principal, request, text, fuzzy_too=True
        )
    similarity = {n.conversation_id: n.similarity for n in nearest}
    semantic = [Candidate(n.conversation_id, n.last_activity_at, n.message_id) for n in nearest]
    if mode is SearchMode.SEMANTIC:
        # Alone, the vector list keeps its own order and score (cosine similarity).
        fused = [replace(f, score=similarity[f.conversation_id]) for f in fuse([], semantic, RRF_K)]
        fused.sort(key=lambda f: (f.score, f.last_activity_at, f.conversation_id), reverse=True)
    else:
        candidates = [Candidate(r["id"], r["last_activity_at"], r["message_id"]) for r in keyword]
        fused = fuse(candidates, semantic, RRF_K)
    total = len(fused)
    if after is not None:
        fused = [f for f in fused if (f.score, f.last_activity_at, f.conversation_id) < after]
    ids = [f.conversation_id for f in fused[: request.limit + 1]]
    rows = {r["id"]: r for r in await conversations_by_id(tx, principal, ids)}
    fused = [f for f in fused[: request.limit + 1] if f.conversation_id in rows]  # deleted meanwhile: gone
    shown = fused[: request.limit]
    details = (
        await repo.hit_details(
            tx,
            principal.tenant_id,
            config,
            highlight,
            [f.conversation_id for f in shown],
            [f.message_id for f in shown],
        )
        if shown
        else []
    )
    messages_found = [d for d in details if d["id"] is not None]
    paths = dict(
        zip(
            (d["id"] for d in messages_found),
            await path_ids(tx, principal.tenant_id, messages_found),
            strict=True,
        )
    )

    def matched(f: Fused) -> SearchMode:
        if f.keyword_rank is not None and f.semantic_rank is not None:
            return SearchMode.HYBRID
        return keyword_mode if f.keyword_rank is not None else SearchMode.SEMANTIC

    hits = [
        SearchHit(
            mode=mode,
            capped=False,
            conversation=rows[f.conversation_id],
            score=f.score,
            snippet=mark_up(detail["snippet"]),
            message=detail if detail["id"] is not None else None,
            message_path=paths.get(detail["id"], []),
            matched=matched(f),
            keyword_rank=f.keyword_rank,
            semantic_rank=f.semantic_rank,
        )
        for f, detail in zip(shown, details, strict=True)
    ]
    hits.extend(
        SearchHit(mode, False, rows[f.conversation_id], f.score, "", None, [])
        for f in fused[request.limit : request.limit + 1]
    )

    async def count() -> int:
        return total

    return SearchPage(hits=hits, count=count)
