"""Encryption at rest (issue 20 item 1): data keys, rotation progress, and the full-text triggers keep the
vector a writer computed from the plaintext when the stored content is sealed (crypto/).

- `data_key`: one active key per tenant (user_id NULL) and per user, wrapped by a master key (`master_key_id`
  says which); shredding nulls `wrapped` and keeps the row, so a read can tell "erased" from "never ours".
  No foreign key to "user": an erased user's key row must outlive the user.
- `key_rotation`: `threadline keys rotate` progress (resumable: each batch commits its position).
- `threadline_message_search()`: a sealed row (content starting with U+001E "tl1:") keeps NEW.search_vector,
  which the writing statement set from the plaintext (an UPDATE that does not set it keeps the old one, as a
  re-encryption wants: same text, new key).
- The PII and embedding triggers that follow content do not fire while `threadline.resealing` is on: a
  re-encryption changes the bytes, not the text.
"""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager

from threadline.db.migration_sql import run_sql

ID = "2026-12-07T02:00:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "encryption at rest: data keys, rotation progress, triggers for sealed content"

SQL = """
CREATE TABLE data_key (
    id uuid PRIMARY KEY,
    tenant_id uuid NOT NULL REFERENCES tenant (id) ON DELETE CASCADE,
    user_id uuid,
    master_key_id text,
    wrapped bytea,
    active boolean NOT NULL DEFAULT true,
    created_at timestamptz NOT NULL DEFAULT now(),
    retired_at timestamptz,
    shredded_at timestamptz
);
CREATE UNIQUE INDEX data_key_active ON data_key (tenant_id, coalesce(user_id, '00000000-0000-0000-0000-000000000000'::uuid))
    WHERE active;
CREATE INDEX data_key_owner ON data_key (tenant_id, user_id);
CREATE INDEX data_key_master ON data_key (master_key_id) WHERE wrapped IS NOT NULL;

CREATE TABLE key_rotation (
    id text PRIMARY KEY,
    target_master_key_id text NOT NULL,
    reencrypt boolean NOT NULL DEFAULT false,
    phase text NOT NULL,
    position jsonb,
    keys_done bigint NOT NULL DEFAULT 0,
    rows_done bigint NOT NULL DEFAULT 0,
    started_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz
);

CREATE OR REPLACE FUNCTION threadline_message_search() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.deleted_at IS NOT NULL OR NEW.content = '' THEN
        NEW.search_vector := NULL;
    ELSIF left(NEW.content, 5) = chr(30) || 'tl1:' THEN
        RETURN NEW;  -- sealed: the writer set the vector from the plaintext
    ELSE
        NEW.search_vector := threadline_search_vector(threadline_search_config(NEW.tenant_id), NEW.content);
    END IF;
    RETURN NEW;
END
$$;

CREATE OR REPLACE FUNCTION threadline_conversation_search() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    cfg regconfig := threadline_search_config(NEW.tenant_id);
    label text := NEW.title || ' ' || array_to_string(NEW.tags, ' ');
BEGIN
    IF left(NEW.title, 5) = chr(30) || 'tl1:' OR left(coalesce(NEW.description, ''), 5) = chr(30) || 'tl1:' THEN
        RETURN NEW;  -- sealed title or description: the writer set the vector from the plaintext
    END IF;
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

DROP TRIGGER message_pii_follows ON message;
CREATE TRIGGER message_pii_follows BEFORE UPDATE OF content ON message
    FOR EACH ROW WHEN (OLD.pii IS NOT NULL AND current_setting('threadline.resealing', true) IS DISTINCT FROM 'on')
    EXECUTE FUNCTION threadline_message_pii_follows();
DROP TRIGGER message_embedding_stale ON message;
CREATE TRIGGER message_embedding_stale AFTER UPDATE OF content, deleted_at ON message
    FOR EACH ROW WHEN ((OLD.content IS DISTINCT FROM NEW.content OR OLD.deleted_at IS DISTINCT FROM NEW.deleted_at)
        AND current_setting('threadline.resealing', true) IS DISTINCT FROM 'on')
    EXECUTE FUNCTION threadline_embedding_stale();
"""


async def forwards() -> MigrationManager:
    manager = MigrationManager(migration_id=ID, app_name="threadline", description=DESCRIPTION)
    manager.add_raw(run_sql(SQL))
    return manager
