"""Idempotency keys, per user: what a key was used for and the ids it created (never content)."""

from piccolo.columns import JSONB, UUID, ForeignKey, Timestamptz, Varchar
from piccolo.columns.defaults.timestamptz import TimestamptzNow
from piccolo.table import Table

from threadline.auth.tables import AppUser, Tenant


class IdempotencyKey(Table, tablename="idempotency_key"):
    """Unique per (tenant_id, user_id, key); written in the transaction of the write it guards."""

    id = UUID(primary_key=True)
    tenant_id = ForeignKey(Tenant, null=False)
    user_id = ForeignKey(AppUser, null=False)
    key = Varchar(length=200)
    operation = Varchar(length=64)
    request_hash = Varchar(length=64)
    # The created objects' ids (a JSON array of UUIDs); null only inside the transaction that claimed the key.
    result = JSONB(null=True, default=None)
    created_at = Timestamptz(default=TimestamptzNow())
    expires_at = Timestamptz()
