"""Search: full-text vectors kept by triggers, GIN indexes, the typo-tolerance lexicon, insight indexes.

Vectors are written by BEFORE triggers in the writer's own statement, so an edit or a tombstone is
searchable (or gone) in the same transaction: there is no separate index to drift. Each tenant picks
its stemming configuration (`tenant.settings->>'searchLanguage'`, default english); 'simple' lexemes
are always added so exact tokens (identifiers, paths, ECONNRESET) match as typed.

Typo tolerance uses trigrams computed in plain SQL over a per-tenant lexicon of title and tag words:
the embedded PostgreSQL wheel ships without the pg_trgm extension, so nothing here depends on it.
"""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager

from threadline.db.migration_sql import run_sql

ID = "2026-11-21T20:45:06:600000"
VERSION = "1.38.0"
DESCRIPTION = "full-text search, search lexicon, insight indexes"

SQL = r"""
CREATE FUNCTION threadline_search_config(tenant uuid) RETURNS regconfig
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT coalesce(
        (SELECT cfg.oid::regconfig FROM tenant t
           JOIN pg_ts_config cfg ON cfg.cfgname = t.settings->>'searchLanguage'
                                AND cfg.cfgnamespace = 'pg_catalog'::regnamespace
          WHERE t.id = tenant),
        'english'::regconfig)
$$;

-- Only the first 100,000 characters are indexed: a tsvector is limited to 1 MB.
CREATE FUNCTION threadline_search_vector(cfg regconfig, body text) RETURNS tsvector
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN cfg = 'simple'::regconfig THEN to_tsvector('simple', left(body, 100000))
                ELSE to_tsvector('simple', left(body, 100000)) || to_tsvector(cfg, left(body, 100000)) END
$$;

-- The stemmed form is OR-ed in only when it differs ('error' | 'error' would double the planner's estimate).
CREATE FUNCTION threadline_search_query(cfg regconfig, query text) RETURNS tsquery
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN cfg = 'simple'::regconfig OR s.exact = s.stemmed THEN s.exact ELSE s.exact || s.stemmed END
    FROM (SELECT websearch_to_tsquery('simple', query) AS exact, websearch_to_tsquery(cfg, query) AS stemmed) s
$$;

-- pg_trgm's definition: lower-case alphanumeric words, padded with two spaces before and one after.
CREATE FUNCTION threadline_trigrams(body text) RETURNS text[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT coalesce(array_agg(DISTINCT substr(p.padded, i, 3)), '{}')
    FROM regexp_split_to_table(lower(body), '[^[:alnum:]]+') AS w(word)
    CROSS JOIN LATERAL (SELECT '  ' || w.word || ' ' AS padded) p
    CROSS JOIN LATERAL generate_series(1, length(w.word) + 1) AS i
    WHERE w.word <> ''
$$;

CREATE FUNCTION threadline_trigram_similarity(a text[], b text[]) RETURNS float8
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN s.shared = 0 THEN 0::float8
                ELSE s.shared::float8 / (cardinality(a) + cardinality(b) - s.shared) END
    FROM (SELECT count(*) AS shared FROM (SELECT unnest(a) INTERSECT SELECT unnest(b)) x) s
$$;

CREATE TABLE search_term (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id uuid NOT NULL REFERENCES tenant (id) ON DELETE CASCADE,
    term varchar(64) NOT NULL,
    trigrams text[] NOT NULL
);
CREATE UNIQUE INDEX search_term_tenant_term ON search_term (tenant_id, term);
CREATE INDEX search_term_trigrams ON search_term USING gin (trigrams);

ALTER TABLE conversation ADD COLUMN search_vector tsvector;
ALTER TABLE message ADD COLUMN search_vector tsvector;

CREATE FUNCTION threadline_conversation_search() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    cfg regconfig := threadline_search_config(NEW.tenant_id);
    label text := NEW.title || ' ' || array_to_string(NEW.tags, ' ');
BEGIN
    NEW.search_vector := setweight(threadline_search_vector(cfg, label), 'A')
        || setweight(threadline_search_vector(cfg, coalesce(NEW.description, '')), 'B');
    INSERT INTO search_term (tenant_id, term, trigrams)
        SELECT NEW.tenant_id, w, threadline_trigrams(w)
        FROM unnest(tsvector_to_array(to_tsvector('simple', label))) AS w
        WHERE length(w) BETWEEN 3 AND 64 AND w ~ '^[[:alnum:]]+$'
        ON CONFLICT (tenant_id, term) DO NOTHING;
    RETURN NEW;
END
$$;

CREATE TRIGGER conversation_search BEFORE INSERT OR UPDATE OF title, description, tags ON conversation
    FOR EACH ROW EXECUTE FUNCTION threadline_conversation_search();

CREATE FUNCTION threadline_message_search() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.deleted_at IS NOT NULL OR NEW.content = '' THEN
        NEW.search_vector := NULL;
    ELSE
        NEW.search_vector := threadline_search_vector(threadline_search_config(NEW.tenant_id), NEW.content);
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER message_search BEFORE INSERT OR UPDATE OF content, deleted_at ON message
    FOR EACH ROW EXECUTE FUNCTION threadline_message_search();

UPDATE conversation SET title = title;
UPDATE message SET content = content;

CREATE INDEX conversation_search ON conversation USING gin (search_vector);
CREATE INDEX message_search ON message USING gin (search_vector);
-- More common lexemes in the statistics: the planner picks index-order or GIN plans from them.
ALTER TABLE message ALTER COLUMN search_vector SET STATISTICS 1000;
ALTER TABLE conversation ALTER COLUMN search_vector SET STATISTICS 1000;
CREATE INDEX conversation_tenant_created ON conversation (tenant_id, created_at);
CREATE INDEX conversation_tenant_deleted ON conversation (tenant_id) WHERE status = 'DELETED';
CREATE INDEX message_tenant_created ON message (tenant_id, created_at)
    INCLUDE (conversation_id, prompt_tokens, completion_tokens);
"""


async def forwards() -> MigrationManager:
    manager = MigrationManager(migration_id=ID, app_name="threadline", description=DESCRIPTION)
    manager.add_raw(run_sql(SQL))
    return manager
