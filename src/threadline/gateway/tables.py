"""Gateway (/v1) calls in progress: one lease row per choice while a call lasts (migrations 2026_12_10t06_20 and
2026_12_10t07_10; the rows are written by gateway.repository and counted with the tenant's executing runs,
runs.repository.claim_next, and, by `user_id`, with the user's active runs, runs.repository.count_active_for_user)."""

from piccolo.columns import UUID, ForeignKey, Timestamptz
from piccolo.columns.base import OnDelete
from piccolo.columns.defaults.timestamptz import TimestamptzNow
from piccolo.table import Table

from threadline.auth.tables import AppUser, Tenant


class GatewayCall(Table, tablename="gateway_call"):
    """A call in progress; it stops counting when deleted (the call ended) or when its lease runs out (its process
    died)."""

    id = UUID(primary_key=True)
    tenant_id = ForeignKey(Tenant, null=False, on_delete=OnDelete.cascade)
    # The caller, on the first row of a call only: a call counts once toward THREADLINE_RUN_MAX_ACTIVE_PER_USER.
    user_id = ForeignKey(AppUser, null=True, on_delete=OnDelete.cascade)
    expires_at = Timestamptz(null=False)
    created_at = Timestamptz(default=TimestamptzNow(), null=False)
