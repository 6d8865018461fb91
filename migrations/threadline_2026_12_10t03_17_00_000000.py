"""The search lexicon (`search_term`: the words of titles and tags, for typo tolerance) forgets a word once no
conversation of its tenant has it in its title or tags any more.

Before, a word stayed in the lexicon for good: the title made from a deleted message, the title of a
conversation that retention or `userErase` hard-deleted, a title that anonymisation masked or its owner
renamed, each left its words (and their trigrams) in the database.

- `threadline_search_term_forget()` runs after a conversation's title or tags change and after it is deleted:
  each word of the old title and tags that the row no longer has is deleted from the lexicon unless another
  conversation of the tenant still has it at weight A of its search vector (its title and tags, where the
  vector holds each word unstemmed; a sealed title's vector too, computed from the plaintext by its writer).
  A sealed old title's words were never in the lexicon (its ciphertext is not read for words).
- Two writers removing the same word each lock its lexicon row before looking (`FOR UPDATE`, in term order),
  and the look is a statement of its own, so the second one sees what the first committed: a word both
  conversations had is not left behind by two concurrent deletes. (A title written concurrently with the
  deletion of the last other conversation having one of its words may lose that word from the lexicon: its
  typo-tolerant match is then missed until the title is written again; nothing is kept that should go.)
- Words already orphaned are deleted once here.
"""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager

from threadline.db.migration_sql import run_sql

ID = "2026-12-10T03:17:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "the search lexicon forgets words no title or tag has any more"

SQL = """
CREATE FUNCTION threadline_label_terms(title text, tags text[]) RETURNS text[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT coalesce(array_agg(w), '{}')
    FROM unnest(tsvector_to_array(to_tsvector('simple',
             CASE WHEN left(coalesce(title, ''), 5) = chr(30) || 'tl1:' THEN '' ELSE coalesce(title, '') END
             || ' ' || coalesce(array_to_string(tags, ' '), '')))) AS w
    WHERE length(w) BETWEEN 3 AND 64 AND w ~ '^[[:alnum:]]+$'
$$;

CREATE FUNCTION threadline_search_term_forget() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    gone text[] := threadline_label_terms(OLD.title, OLD.tags);
BEGIN
    IF TG_OP = 'UPDATE' THEN
        gone := ARRAY(SELECT unnest(gone) EXCEPT SELECT unnest(threadline_label_terms(NEW.title, NEW.tags)));
    END IF;
    IF cardinality(gone) = 0 THEN
        RETURN NULL;
    END IF;
    PERFORM 1 FROM search_term WHERE tenant_id = OLD.tenant_id AND term = ANY (gone) ORDER BY term FOR UPDATE;
    DELETE FROM search_term s
    WHERE s.tenant_id = OLD.tenant_id AND s.term = ANY (gone)
      AND NOT EXISTS (
          SELECT 1 FROM conversation c
          WHERE c.tenant_id = OLD.tenant_id AND c.search_vector @@ (s.term || ':A')::tsquery);
    RETURN NULL;
END
$$;

CREATE TRIGGER conversation_search_term_forget AFTER UPDATE OF title, tags ON conversation
    FOR EACH ROW WHEN (OLD.title IS DISTINCT FROM NEW.title OR OLD.tags IS DISTINCT FROM NEW.tags)
    EXECUTE FUNCTION threadline_search_term_forget();
CREATE TRIGGER conversation_search_term_forget_deleted AFTER DELETE ON conversation
    FOR EACH ROW EXECUTE FUNCTION threadline_search_term_forget();

DELETE FROM search_term s
WHERE NOT EXISTS (
    SELECT 1 FROM conversation c WHERE c.tenant_id = s.tenant_id AND c.search_vector @@ (s.term || ':A')::tsquery);
"""


async def forwards() -> MigrationManager:
    manager = MigrationManager(migration_id=ID, app_name="threadline", description=DESCRIPTION)
    manager.add_raw(run_sql(SQL))
    return manager
