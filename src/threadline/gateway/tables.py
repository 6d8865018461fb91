"""Gateway (/v1) calls in progress: one lease row each while a call lasts (migration 2026_12_10t06_20; the rows are
written by gateway.repository and counted with the tenant's executing runs, runs.repository.claim_next)."""

from piccolo.columns import UUID, ForeignKey, Timestamptz
from piccolo.columns.base import OnDelete
from piccolo.columns.defaults.timestamptz import TimestamptzNow
from piccolo.table import Table

from threadline.auth.tables import Tenant


class GatewayCall(Table, tablename="gateway_call"):
    """A call in progress; it stops counting when deleted (the call ended) or when its lease runs out (its process
    died)."""

    id = UUID(primary_key=True)
    tenant_id = ForeignKey(Tenant, null=False, on_delete=OnDelete.cascade)
    expires_at = Timestamptz(null=False)
    created_at = Timestamptz(default=TimestamptzNow(), null=False)
