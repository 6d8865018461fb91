"""All SQL of tenants, users and API keys. Tenant first in every signature."""

from __future__ import annotations

import uuid

import asyncpg

from threadline.db import Executor

USER_COLUMNS = "id, tenant_id, email, display_name, role, team, external_subject, created_at"


async def insert_tenant(db: Executor, name: str) -> asyncpg.Record:
    row = await db.fetchrow(
        "INSERT INTO tenant (id, name, settings) VALUES ($1, $2, $3) RETURNING id, name, created_at",
        uuid.uuid4(),
        name,
        {},
    )
    assert row is not None
    return row


async def insert_user(
    db: Executor,
    tenant_id: uuid.UUID,
    *,
    email: str | None,
    display_name: str,
    role: str,
    team: str | None,
    external_subject: str | None = None,
) -> asyncpg.Record:
    row = await db.fetchrow(
        f"""INSERT INTO app_user (id, tenant_id, email, display_name, role, team, external_subject)
            VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {USER_COLUMNS}""",
        uuid.uuid4(),
        tenant_id,
        email,
        display_name,
        role,
        team,
        external_subject,
    )
    assert row is not None
    return row


async def subject_user(db: Executor, tenant_id: uuid.UUID, subject: str) -> asyncpg.Record | None:
    """The user provisioned for a JWT subject, if any."""
    return await db.fetchrow(
        f"""SELECT {USER_COLUMNS}, (SELECT t.settings ->> 'piiPolicy' FROM tenant t WHERE t.id = $1) AS pii_policy
            FROM app_user WHERE tenant_id = $1 AND external_subject = $2""",
        tenant_id,
        subject,
    )


async def insert_subject_user(
    db: Executor, tenant_id: uuid.UUID, subject: str, subject_hash: str, role: str
) -> asyncpg.Record | None:
    """Provisions the user of a JWT subject on first sight, with the token's role; None when the subject was
    erased (its tombstone exists) or another request provisioned it meanwhile (read it with subject_user)."""
    return await db.fetchrow(
        f"""INSERT INTO app_user (id, tenant_id, email, display_name, role, team, external_subject)
            SELECT $1, $2, NULL, $3, $4, NULL, $3
            WHERE NOT EXISTS (SELECT 1 FROM erased_subject WHERE tenant_id = $2 AND subject_hash = $5)
            ON CONFLICT (tenant_id, external_subject) WHERE external_subject IS NOT NULL DO NOTHING
            RETURNING {USER_COLUMNS}""",
        uuid.uuid4(),
        tenant_id,
        subject,
        role,
        subject_hash,
    )


async def subject_erased(db: Executor, tenant_id: uuid.UUID, subject_hash: str) -> bool:
    return bool(
        await db.fetchval(
            "SELECT EXISTS (SELECT 1 FROM erased_subject WHERE tenant_id = $1 AND subject_hash = $2)",
            tenant_id,
            subject_hash,
        )
    )


async def insert_erased_subject(db: Executor, tenant_id: uuid.UUID, subject_hash: str) -> None:
    await db.execute(
        """INSERT INTO erased_subject (id, tenant_id, subject_hash) VALUES ($1, $2, $3)
           ON CONFLICT (tenant_id, subject_hash) DO NOTHING""",
        uuid.uuid4(),
        tenant_id,
        subject_hash,
    )


async def set_user_role(
    db: Executor, tenant_id: uuid.UUID, user_id: uuid.UUID, role: str
) -> asyncpg.Record | None:
    return await db.fetchrow(
        f"UPDATE app_user SET role = $3 WHERE tenant_id = $1 AND id = $2 RETURNING {USER_COLUMNS}",
        tenant_id,
        user_id,
        role,
    )


async def user_by_id(db: Executor, tenant_id: uuid.UUID, user_id: uuid.UUID) -> asyncpg.Record | None:
    return await db.fetchrow(
        f"SELECT {USER_COLUMNS} FROM app_user WHERE tenant_id = $1 AND id = $2", tenant_id, user_id
    )


async def users_by_ids(db: Executor, tenant_id: uuid.UUID, ids: list[uuid.UUID]) -> list[asyncpg.Record]:
    return await db.fetch(
        f"SELECT {USER_COLUMNS} FROM app_user WHERE tenant_id = $1 AND id = ANY($2::uuid[])", tenant_id, ids
    )


async def list_users(
    db: Executor, tenant_id: uuid.UUID, limit: int, after: tuple[object, ...] | None
) -> list[asyncpg.Record]:
    if after is None:
        return await db.fetch(
            f"SELECT {USER_COLUMNS} FROM app_user WHERE tenant_id = $1 ORDER BY created_at, id LIMIT $2",
            tenant_id,
            limit,
        )
    return await db.fetch(
        f"""SELECT {USER_COLUMNS} FROM app_user WHERE tenant_id = $1 AND (created_at, id) > ($2, $3)
            ORDER BY created_at, id LIMIT $4""",
        tenant_id,
        after[0],
        after[1],
        limit,
    )


async def count_users(db: Executor, tenant_id: uuid.UUID) -> int:
    return int(await db.fetchval("SELECT count(*) FROM app_user WHERE tenant_id = $1", tenant_id))


async def insert_api_key(
    db: Executor, tenant_id: uuid.UUID, user_id: uuid.UUID, name: str, key_hash: str, prefix: str
) -> asyncpg.Record:
    row = await db.fetchrow(
        """INSERT INTO api_key (id, tenant_id, user_id, name, key_hash, prefix, revoked, note)
           VALUES ($1, $2, $3, $4, $5, $6, false, '')
           RETURNING id, tenant_id, user_id, name, prefix, revoked, created_at""",
        uuid.uuid4(),
        tenant_id,
        user_id,
        name,
        key_hash,
        prefix,
    )
    assert row is not None
    return row


async def revoke_api_key(db: Executor, tenant_id: uuid.UUID, key_id: uuid.UUID) -> asyncpg.Record | None:
    return await db.fetchrow(
        """UPDATE api_key SET revoked = true WHERE tenant_id = $1 AND id = $2
           RETURNING id, tenant_id, user_id, name, prefix, revoked, created_at""",
        tenant_id,
        key_id,
    )


async def api_key_by_id(db: Executor, tenant_id: uuid.UUID, key_id: uuid.UUID) -> asyncpg.Record | None:
    return await db.fetchrow(
        """SELECT id, tenant_id, user_id, name, prefix, revoked, created_at FROM api_key
           WHERE tenant_id = $1 AND id = $2""",
        tenant_id,
        key_id,
    )


async def principal_by_key_hash(db: Executor, key_hash: str) -> asyncpg.Record | None:
    """Not tenant-scoped by design: the key is what tells us the tenant."""
    return await db.fetchrow(
        """SELECT u.tenant_id, u.id AS user_id, u.role, u.team, t.settings ->> 'piiPolicy' AS pii_policy
           FROM api_key k JOIN app_user u ON u.id = k.user_id JOIN tenant t ON t.id = u.tenant_id
           WHERE k.key_hash = $1 AND NOT k.revoked""",
        key_hash,
    )


async def tenant_exists(db: Executor, tenant_id: uuid.UUID) -> bool:
    return bool(await db.fetchval("SELECT EXISTS (SELECT 1 FROM tenant WHERE id = $1)", tenant_id))
