"""Rate limits: profiles, per-user assignments and the shared token buckets (UNLOGGED: a crash only resets them)."""

from piccolo.apps.migrations.auto.migration_manager import MigrationManager

from threadline.db.migration_sql import run_sql

ID = "2026-11-22T10:00:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "rate limit profiles, assignments and buckets"

SQL = """
CREATE TABLE rate_limit_profile (
    id uuid PRIMARY KEY,
    tenant_id uuid NOT NULL REFERENCES tenant (id) ON DELETE CASCADE,
    name varchar(100) NOT NULL,
    window_seconds integer NOT NULL DEFAULT 60 CHECK (window_seconds > 0),
    burst integer NOT NULL DEFAULT 0 CHECK (burst >= 0),
    requests_per_window integer NOT NULL DEFAULT 6000 CHECK (requests_per_window >= 0),
    mutations_per_window integer NOT NULL DEFAULT 1200 CHECK (mutations_per_window >= 0),
    runs_per_window integer NOT NULL DEFAULT 300 CHECK (runs_per_window >= 0),
    subscriptions_per_window integer NOT NULL DEFAULT 600 CHECK (subscriptions_per_window >= 0),
    is_default boolean NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX rate_limit_profile_name ON rate_limit_profile (tenant_id, name);
CREATE UNIQUE INDEX rate_limit_profile_default ON rate_limit_profile (tenant_id) WHERE is_default;

CREATE TABLE rate_limit_assignment (
    user_id uuid PRIMARY KEY REFERENCES app_user (id) ON DELETE CASCADE,
    tenant_id uuid NOT NULL REFERENCES tenant (id) ON DELETE CASCADE,
    profile_id uuid NOT NULL REFERENCES rate_limit_profile (id) ON DELETE CASCADE,
    assigned_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX rate_limit_assignment_profile ON rate_limit_assignment (profile_id);

CREATE UNLOGGED TABLE rate_limit_bucket (
    id uuid PRIMARY KEY,
    tenant_id uuid NOT NULL REFERENCES tenant (id) ON DELETE CASCADE,
    user_id uuid NOT NULL REFERENCES app_user (id) ON DELETE CASCADE,
    bucket varchar(16) NOT NULL,
    capacity integer NOT NULL DEFAULT 0,
    per_window integer NOT NULL DEFAULT 0,
    window_seconds integer NOT NULL DEFAULT 60,
    tokens_milli bigint NOT NULL DEFAULT 0,
    last_cost integer NOT NULL DEFAULT 0,
    allowed boolean NOT NULL DEFAULT true,
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX rate_limit_bucket_key ON rate_limit_bucket (tenant_id, user_id, bucket);
CREATE INDEX rate_limit_bucket_user ON rate_limit_bucket (user_id);
"""


async def forwards() -> MigrationManager:
    manager = MigrationManager(migration_id=ID, app_name="threadline", description=DESCRIPTION)
    manager.add_raw(run_sql(SQL))
    return manager
