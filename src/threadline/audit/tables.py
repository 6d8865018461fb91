"""The audit log: who did what to which object, and when."""

from piccolo.columns import JSONB, UUID, ForeignKey, Timestamptz, Varchar
from piccolo.columns.defaults.timestamptz import TimestamptzNow
from piccolo.table import Table

from threadline.auth.tables import Tenant


class AuditLog(Table, tablename="audit_log"):
    id = UUID(primary_key=True)
    tenant_id = ForeignKey(Tenant, null=False)
    # Plain columns, no foreign keys: entries outlive the users and objects they mention.
    actor_id = UUID(null=True, default=None)
    action = Varchar(length=64)
    target_kind = Varchar(length=16, null=True, default=None)
    target_id = UUID(null=True, default=None)
    details = JSONB(default="{}")
    created_at = Timestamptz(default=TimestamptzNow())
