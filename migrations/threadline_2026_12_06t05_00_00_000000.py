"""PII detections on messages, and the audit log made append-only (issue 20 items 2 and 3).

`message.pii` holds the detections of the stored content ([{kind, start, end}]); NULL when never scanned
(policy OFF, or written before the policy and not backfilled yet: `threadline pii backfill`).

The audit log accepts INSERT only. Two narrow exceptions, each switched on for one transaction by the code that
needs it (`SET LOCAL threadline.audit_rewrite`): erasure rewrites the user ids of entries to the anonymous
placeholder (nothing else of the row may change), and retention deletes entries past the tenant's audit
retention. TRUNCATE (an operator's, or the test harness's) is not the application's and is left alone.
"""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager

from threadline.db.migration_sql import run_sql

ID = "2026-12-06T05:00:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "message.pii and the append-only audit log"

SQL = """
ALTER TABLE message ADD COLUMN pii jsonb;

CREATE FUNCTION threadline_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    allowed text := coalesce(current_setting('threadline.audit_rewrite', true), '');
BEGIN
    IF TG_OP = 'UPDATE' AND allowed = 'erasure'
       AND NEW.id = OLD.id AND NEW.tenant_id = OLD.tenant_id AND NEW.action = OLD.action
       AND NEW.target_kind IS NOT DISTINCT FROM OLD.target_kind AND NEW.details = OLD.details
       AND NEW.created_at = OLD.created_at THEN
        RETURN NEW;
    END IF;
    IF TG_OP = 'DELETE' AND allowed = 'retention' THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'audit_log is append-only: % refused', TG_OP USING ERRCODE = 'insufficient_privilege';
END
$$;

CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION threadline_audit_append_only();
"""


async def forwards() -> MigrationManager:
    manager = MigrationManager(migration_id=ID, app_name="threadline", description=DESCRIPTION)
    manager.add_raw(run_sql(SQL))
    return manager
