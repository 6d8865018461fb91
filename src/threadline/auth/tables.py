"""Tenants, users and API keys."""

from piccolo.columns import (
    JSONB,
    UUID,
    Boolean,
    ForeignKey,
    Text,
    Timestamptz,
    Varchar,
)
from piccolo.columns.defaults.timestamptz import TimestamptzNow
from piccolo.table import Table


class Tenant(Table, tablename="tenant"):
    id = UUID(primary_key=True)
    name = Varchar(length=200)
    settings = JSONB(default="{}")
    created_at = Timestamptz(default=TimestamptzNow())


class AppUser(Table, tablename="app_user"):
    id = UUID(primary_key=True)
    tenant_id = ForeignKey(Tenant, null=False)
    email = Varchar(length=320, null=True, default=None)
    display_name = Varchar(length=200, default="")
    role = Varchar(length=16, default="MEMBER")
    team = Varchar(length=100, null=True, default=None)
    external_subject = Varchar(length=255, null=True, default=None)
    created_at = Timestamptz(default=TimestamptzNow())


class ApiKey(Table, tablename="api_key"):
    id = UUID(primary_key=True)
    tenant_id = ForeignKey(Tenant, null=False)
    user_id = ForeignKey(AppUser, null=False)
    name = Varchar(length=200, default="")
    key_hash = Varchar(length=64, unique=True)
    prefix = Varchar(length=16)
    revoked = Boolean(default=False)
    created_at = Timestamptz(default=TimestamptzNow())
    last_used_at = Timestamptz(null=True, default=None)
    note = Text(default="")
    # The key that minted this one (apiKeyCreate called with an API key); NULL when a JWT, the bootstrap or a
    # key made before lineage was recorded minted it. Revoking or deleting a key revokes the keys it minted.
    created_by_key = UUID(null=True, default=None)
    revoked_at = Timestamptz(null=True, default=None)


class ErasedSubject(Table, tablename="erased_subject"):
    """JWT subjects whose user was erased: a token for one of them provisions nobody again. Only a hash of
    the subject is kept (the subject itself is the erased person's identifier at their identity provider)."""

    id = UUID(primary_key=True)
    tenant_id = ForeignKey(Tenant, null=False)
    subject_hash = Varchar(length=64)
    erased_at = Timestamptz(default=TimestamptzNow())
