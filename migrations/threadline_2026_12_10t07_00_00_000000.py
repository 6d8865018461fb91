"""Key lineage: an API key records the key that minted it (`created_by_key`, NULL when a JWT, the bootstrap
or a key made before this migration minted it), and when it was revoked (`revoked_at`). Revoking a key revokes
every live key it minted, transitively (auth.service.revoke_api_key): a leaked key's children do not outlive
it. Deleting a key (an erased or anonymised user's keys go with them) revokes its live descendants too, by the
trigger below; auth.live.user_erased then announces the change to their users' open sockets (it finds them by
`revoked_at = now()`, this transaction's start).

No foreign key on `created_by_key`: the lineage outlives a deleted parent (an ON DELETE SET NULL would run
before the trigger and hide the children from it). The recursion walks live keys only: a revoked key's
children are revoked with it, so its cost is bounded by the live keys a user may hold
(auth.service.MAX_LIVE_KEYS_PER_USER)."""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager

from threadline.db.migration_sql import run_sql

ID = "2026-12-10T07:00:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "api_key.created_by_key and revoked_at; deleting a key revokes the keys it minted"

SQL = """
ALTER TABLE api_key ADD COLUMN created_by_key uuid;
ALTER TABLE api_key ADD COLUMN revoked_at timestamptz;
CREATE INDEX api_key_minted_by ON api_key (tenant_id, created_by_key, created_at, id)
    WHERE created_by_key IS NOT NULL;
CREATE INDEX api_key_live_by_user ON api_key (tenant_id, user_id) WHERE NOT revoked;

CREATE OR REPLACE FUNCTION threadline_api_key_deleted() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    revoked_now integer;
BEGIN
    -- Repeated until nothing more is revoked: a key minted (and committed) while a pass ran is found by the
    -- next one (apiKeyCreate holds its parent key's row while it inserts, so none is minted after a pass).
    LOOP
        -- Through the keys revoked in this transaction too (revoked_at = now()), so that a later pass reaches
        -- a key minted under one revoked by an earlier pass.
        WITH RECURSIVE minted AS (
            SELECT k.tenant_id, k.id FROM api_key k
            JOIN gone g ON k.tenant_id = g.tenant_id AND k.created_by_key = g.id
            WHERE NOT k.revoked OR k.revoked_at = now()
            UNION
            SELECT k.tenant_id, k.id FROM api_key k
            JOIN minted m ON k.tenant_id = m.tenant_id AND k.created_by_key = m.id
            WHERE NOT k.revoked OR k.revoked_at = now()
        )
        UPDATE api_key SET revoked = true, revoked_at = now() WHERE id IN (SELECT id FROM minted) AND NOT revoked;
        GET DIAGNOSTICS revoked_now = ROW_COUNT;
        EXIT WHEN revoked_now = 0;
    END LOOP;
    RETURN NULL;
END $$;

CREATE TRIGGER api_key_deleted AFTER DELETE ON api_key
    REFERENCING OLD TABLE AS gone FOR EACH STATEMENT EXECUTE FUNCTION threadline_api_key_deleted();
"""


async def forwards() -> MigrationManager:
    manager = MigrationManager(migration_id=ID, app_name="threadline", description=DESCRIPTION)
    manager.add_raw(run_sql(SQL))
    return manager
