"""Encryption at rest's own tables (crypto/): wrapped data keys and the progress of a key rotation."""

from piccolo.columns import JSONB, UUID, BigInt, Boolean, Bytea, ForeignKey, Text, Timestamptz
from piccolo.columns.defaults.timestamptz import TimestamptzNow
from piccolo.table import Table

from threadline.auth.tables import Tenant


class DataKey(Table, tablename="data_key"):
    """A tenant's (user_id NULL) or a user's data key, wrapped by the master key `master_key_id` names;
    shredding nulls `wrapped` and keeps the row. No foreign key to the user: the row outlives an erasure."""

    id = UUID(primary_key=True)
    tenant_id = ForeignKey(Tenant, null=False)
    user_id = UUID(null=True, default=None)
    master_key_id = Text(null=True, default=None)
    wrapped = Bytea(null=True, default=None)
    active = Boolean(default=True)
    created_at = Timestamptz(default=TimestamptzNow())
    retired_at = Timestamptz(null=True, default=None)
    shredded_at = Timestamptz(null=True, default=None)


class KeyRotation(Table, tablename="key_rotation"):
    """`threadline keys rotate` progress: each batch commits its position, so a rotation resumes."""

    id = Text(primary_key=True)
    target_master_key_id = Text()
    reencrypt = Boolean(default=False)
    phase = Text()
    position = JSONB(null=True, default=None)
    keys_done = BigInt(default=0)
    rows_done = BigInt(default=0)
    started_at = Timestamptz(default=TimestamptzNow())
    updated_at = Timestamptz(default=TimestamptzNow())
    finished_at = Timestamptz(null=True, default=None)
