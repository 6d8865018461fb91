"""Rate-limit profiles, who they are assigned to, and the shared token buckets that enforce them."""

from piccolo.columns import UUID, BigInt, Boolean, ForeignKey, Integer, Timestamptz, Varchar
from piccolo.columns.defaults.timestamptz import TimestamptzNow
from piccolo.table import Table

from threadline.auth.tables import AppUser, Tenant


class RateLimitProfile(Table, tablename="rate_limit_profile"):
    id = UUID(primary_key=True)
    tenant_id = ForeignKey(Tenant, null=False)
    name = Varchar(length=100)
    window_seconds = Integer(default=60)
    burst = Integer(default=0)
    requests_per_window = Integer(default=6000)
    mutations_per_window = Integer(default=1200)
    runs_per_window = Integer(default=300)
    subscriptions_per_window = Integer(default=600)
    is_default = Boolean(default=False)
    created_at = Timestamptz(default=TimestamptzNow())
    updated_at = Timestamptz(default=TimestamptzNow())


class RateLimitAssignment(Table, tablename="rate_limit_assignment"):
    user_id = ForeignKey(AppUser, primary_key=True, null=False)
    tenant_id = ForeignKey(Tenant, null=False)
    profile_id = ForeignKey(RateLimitProfile, null=False)
    assigned_at = Timestamptz(default=TimestamptzNow())


class RateLimitBucket(Table, tablename="rate_limit_bucket"):
    """One token bucket per (tenant, user, budget); UNLOGGED (a crash resets budgets, which is harmless)."""

    id = UUID(primary_key=True)
    tenant_id = ForeignKey(Tenant, null=False)
    user_id = ForeignKey(AppUser, null=False)
    bucket = Varchar(length=16)
    capacity = Integer(default=0)
    per_window = Integer(default=0)
    window_seconds = Integer(default=60)
    tokens_milli = BigInt(default=0)
    last_cost = Integer(default=0)
    allowed = Boolean(default=True)
    updated_at = Timestamptz(default=TimestamptzNow())
