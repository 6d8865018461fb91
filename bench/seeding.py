"""Set-based seeding for benches at scale: conversations, messages and the test embedder's vectors made inside
PostgreSQL (INSERT ... SELECT over generate_series), so a million messages cost neither a Python loop per row nor
their text and vectors in the client's memory.

    seed_threads(conn, ...)       # one tenant's conversations, each one thread of USER messages in order
    seed_test_vectors(conn, ...)  # the deterministic test embedder's vector of every seeded message
    check_test_vectors(conn, ...) # a sample of them against threadline.embeddings.concepts.concept_vector

Texts are sentences of the test embedder's synonym words joined by stop words ("car with cheap about ..."), drawn
with a fixed seed. Every vocabulary word has exactly one feature (its concept), so a message's vector is the
L2-normalised sum over its concepts of (1 + ln(count)) x the concept's direction: the directions (weighted by each
count that occurs) are computed here by the embedder's own code and the sums by pgvector (`sum`, `l2_normalize`).
`check_test_vectors` proves the two agree on a sample.
"""

from __future__ import annotations

import io
import math
import uuid
from datetime import datetime

import asyncpg

from threadline.embeddings.concepts import SYNONYMS, _direction, concept_vector, features
from threadline.embeddings.repository import vector_text

JOINERS = ("and", "with", "for", "about", "the", "of", "on")  # stop words: no feature of their own
MIN_WORDS, MAX_WORDS = 5, 13  # content words per message


def vocabulary() -> list[tuple[str, str]]:
    """(word, its single feature) for every synonym word the test embedder gives exactly one feature."""
    words = []
    for group in SYNONYMS:
        for word in group:
            counted = features(word)
            if "_" not in word and len(counted) == 1 and sum(counted.values()) == 1:
                words.append((word, next(iter(counted))))
    return sorted(set(words))


async def seed_threads(
    conn: asyncpg.Connection,
    tenant: uuid.UUID,
    admin: uuid.UUID,
    member: uuid.UUID,
    messages: int,
    conversations: int,
    now: datetime,
    members: int = 50,
    seed: float = 0.11,
) -> int:
    """`conversations` conversations of `messages // conversations` USER messages each, one thread per
    conversation (each message the reply of the one before), owned by `member` for every `members`-th and by
    `admin` otherwise, created within the year before `now`. Ids are md5 of `c<n>` (conversations) and `m<n>`
    (messages). Leaves the temporary tables seed_text (m, content) and seed_token (m, k, word) for
    `seed_test_vectors`. Returns the number of messages."""
    per = max(1, messages // conversations)
    total = per * conversations
    words = vocabulary()
    await conn.execute("SET work_mem = '512MB'")
    await conn.execute("SELECT setseed($1)", seed)
    await conn.execute(
        "CREATE TEMP TABLE seed_vocab (id int PRIMARY KEY, word text NOT NULL, feature text NOT NULL)"
    )
    await conn.copy_records_to_table(
        "seed_vocab", records=[(i, w, f) for i, (w, f) in enumerate(words)], columns=["id", "word", "feature"]
    )
    # MIN_WORDS..MAX_WORDS content words per message, each followed by a joiner but the last.
    await conn.execute(
        f"""CREATE TEMP TABLE seed_token AS
            SELECT m, k, floor(random() * {len(words)})::int AS word,
                   (ARRAY{list(JOINERS)!r})[1 + floor(random() * {len(JOINERS)})::int] AS joiner,
                   k = {MIN_WORDS} + (m::bigint * 7919) % {MAX_WORDS - MIN_WORDS + 1} AS last
            FROM generate_series(0, {total - 1}) m, generate_series(1, {MAX_WORDS}) k
            WHERE k <= {MIN_WORDS} + (m::bigint * 7919) % {MAX_WORDS - MIN_WORDS + 1}"""
    )
    await conn.execute(
        """CREATE TEMP TABLE seed_text AS
           SELECT t.m, string_agg(CASE WHEN t.last THEN v.word ELSE v.word || ' ' || t.joiner END, ' '
                                  ORDER BY t.k) AS content
           FROM seed_token t JOIN seed_vocab v ON v.id = t.word GROUP BY t.m"""
    )

    def created(c: str, now_at: str = "$3") -> str:
        """Conversation `c`'s creation: a fixed spread over the year before `now`; messages 30 s apart after."""
        return f"({now_at}::timestamptz - make_interval(secs => (({c}::bigint * 2654435761) % 31536000)::float8))"

    def owner(c: str, member_at: str = "$2", admin_at: str = "$4") -> str:
        return f"(CASE WHEN {c} % {members} = 0 THEN {member_at}::uuid ELSE {admin_at}::uuid END)"

    await conn.execute(
        f"""INSERT INTO conversation (id, tenant_id, owner_id, title, description, tags, status, message_count,
                                      token_count, created_at, updated_at, last_activity_at)
            SELECT md5('c' || c)::uuid, $1, {owner("c")}, 'Notes ' || c, '', '{{}}', 'ACTIVE', {per}, 0,
                   {created("c")}, {created("c")} + make_interval(secs => {per * 30}),
                   {created("c")} + make_interval(secs => {per * 30})
            FROM generate_series(0, {conversations - 1}) c""",
        tenant,
        member,
        now,
        admin,
    )
    await conn.execute(
        f"""INSERT INTO participant (id, tenant_id, conversation_id, user_id, role)
            SELECT gen_random_uuid(), $1, md5('c' || c)::uuid, {owner("c", "$2", "$3")}, 'OWNER'
            FROM generate_series(0, {conversations - 1}) c""",
        tenant,
        member,
        admin,
    )
    await conn.execute(
        f"""INSERT INTO message (id, tenant_id, conversation_id, root_id, parent_id, depth, path, child_count, role,
                                 content, author_id, created_at)
            SELECT md5('m' || s.m)::uuid, $1, md5('c' || s.c)::uuid, md5('m' || (s.m - s.i))::uuid,
                   CASE WHEN s.i = 0 THEN NULL ELSE md5('m' || (s.m - 1))::uuid END, s.i,
                   decode(repeat('00', s.i), 'hex'), CASE WHEN s.i < {per - 1} THEN 1 ELSE 0 END, 'USER',
                   s.content, {owner("s.c")}, {created("s.c")}
                       + make_interval(secs => (s.i + 1) * 30)
            FROM (SELECT m, m / {per} AS c, m % {per} AS i, content FROM seed_text) s
            ORDER BY s.m""",
        tenant,
        member,
        now,
        admin,
    )
    await conn.execute(
        f"""INSERT INTO thread (id, tenant_id, conversation_id, reply_count, created_at, last_activity_at)
            SELECT md5('m' || (c * {per}))::uuid, $1, md5('c' || c)::uuid, {per - 1},
                   {created("c", "$2")} + make_interval(secs => {per * 30}),
                   {created("c", "$2")} + make_interval(secs => {per * 30})
            FROM generate_series(0, {conversations - 1}) c""",
        tenant,
        now,
    )
    return total


async def seed_test_vectors(
    conn: asyncpg.Connection,
    tenant: uuid.UUID,
    per: int,
    model_id: int,
    dimensions: int,
    scattered: bool = False,
) -> int:
    """Chunk 0 of every message `seed_threads` made, with the test embedder's vector of its text (the texts are
    far shorter than a chunk). Stored in message order, a conversation's vectors together (as an indexer catching
    up on a history or an import writes them), or with `scattered` in the aggregate's hash order (each vector of a
    conversation on a page of its own: the worst case for reading one user's vectors). Returns the rows stored."""
    # Two words of one concept in a message count together: (feature, count) pairs over concepts, not words.
    concept_counts = await conn.fetch(
        """SELECT DISTINCT feature, n FROM (
               SELECT t.m, v.feature, count(*) AS n FROM seed_token t JOIN seed_vocab v ON v.id = t.word
               GROUP BY t.m, v.feature) f"""
    )
    lines = []
    for row in concept_counts:
        weight = 1.0 + math.log(row["n"])
        direction = _direction(row["feature"], dimensions)
        lines.append(f"{row['feature']}\t{row['n']}\t{vector_text([weight * v for v in direction])}\n")
    await conn.execute(
        "CREATE TEMP TABLE seed_direction (feature text, n bigint, vec vector, PRIMARY KEY (feature, n))"
    )
    await conn.copy_to_table(
        "seed_direction", source=io.BytesIO("".join(lines).encode()), columns=["feature", "n", "vec"]
    )
    status = await conn.execute(
        f"""INSERT INTO message_embedding (tenant_id, message_id, conversation_id, model_id, chunk, start_char,
                                           end_char, embedding)
            SELECT $1, md5('m' || f.m)::uuid, md5('c' || (f.m / {per}))::uuid, {int(model_id)}, 0, 0,
                   length(s.content), l2_normalize(sum(d.vec))
            FROM (SELECT t.m, v.feature, count(*) AS n FROM seed_token t JOIN seed_vocab v ON v.id = t.word
                  GROUP BY t.m, v.feature) f
            JOIN seed_direction d ON d.feature = f.feature AND d.n = f.n
            JOIN seed_text s ON s.m = f.m
            GROUP BY f.m, s.content {"" if scattered else "ORDER BY f.m"}""",
        tenant,
    )
    return int(status.split()[-1])


async def check_test_vectors(
    conn: asyncpg.Connection, model_id: int, dimensions: int, sample: int = 200
) -> float:
    """The largest difference of any coordinate between a sample of stored vectors and concept_vector of their
    message's text (float4 storage: about 1e-7); raises when one differs by more than 1e-5."""
    rows = await conn.fetch(
        f"""SELECT m.content, e.embedding::text AS vector FROM message_embedding e
            JOIN message m ON m.id = e.message_id WHERE e.model_id = {int(model_id)}
            ORDER BY e.message_id LIMIT {int(sample)}"""
    )
    worst = 0.0
    for row in rows:
        expected = concept_vector(row["content"], dimensions)
        assert expected is not None
        stored = [float(x) for x in row["vector"].strip("[]").split(",")]
        worst = max(worst, max(abs(a - b) for a, b in zip(expected, stored, strict=True)))
    if worst > 1e-5:
        raise AssertionError(f"seeded vectors differ from the test embedder's by up to {worst}")
    return worst


async def drop_seed_tables(conn: asyncpg.Connection) -> None:
    await conn.execute("DROP TABLE IF EXISTS seed_direction, seed_text, seed_token, seed_vocab")
