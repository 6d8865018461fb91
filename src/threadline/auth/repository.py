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


KEY_COLUMNS = "id, tenant_id, user_id, name, prefix, revoked, created_at, created_by_key, revoked_at"


async def insert_api_key(
    db: Executor,
    tenant_id: uuid.UUID,
    user_id: uuid.UUID,
    name: str,
    key_hash: str,
    prefix: str,
    created_by_key: uuid.UUID | None = None,
) -> asyncpg.Record:
    row = await db.fetchrow(
        f"""INSERT INTO api_key (id, tenant_id, user_id, name, key_hash, prefix, revoked, note, created_by_key)
            VALUES ($1, $2, $3, $4, $5, $6, false, '', $7)
            RETURNING {KEY_COLUMNS}""",
        uuid.uuid4(),
        tenant_id,
        user_id,
        name,
        key_hash,
        prefix,
        created_by_key,
    )
    assert row is not None
    return row


async def lock_live_api_key(db: Executor, tenant_id: uuid.UUID, key_id: uuid.UUID) -> bool:
    """Holds a live key's row (FOR SHARE) for the rest of the transaction: a key minted under it commits before
    a revocation of it starts looking for its children, or sees it revoked. False when it is revoked or gone."""
    return bool(
        await db.fetchval(
            "SELECT true FROM api_key WHERE tenant_id = $1 AND id = $2 AND NOT revoked FOR SHARE",
            tenant_id,
            key_id,
        )
    )


async def lock_user_keys(db: Executor, tenant_id: uuid.UUID, user_id: uuid.UUID) -> int | None:
    """Locks the user's row against concurrent key creation and counts their live keys; None if no such user."""
    found = await db.fetchval(
        "SELECT true FROM app_user WHERE tenant_id = $1 AND id = $2 FOR NO KEY UPDATE", tenant_id, user_id
    )
    if not found:
        return None
    return int(
        await db.fetchval(
            "SELECT count(*) FROM api_key WHERE tenant_id = $1 AND user_id = $2 AND NOT revoked",
            tenant_id,
            user_id,
        )
    )


async def revoke_api_key(db: Executor, tenant_id: uuid.UUID, key_id: uuid.UUID) -> asyncpg.Record | None:
    return await db.fetchrow(
        f"""UPDATE api_key SET revoked = true, revoked_at = coalesce(revoked_at, now())
            WHERE tenant_id = $1 AND id = $2 RETURNING {KEY_COLUMNS}""",
        tenant_id,
        key_id,
    )


async def revoke_minted_keys(
    db: Executor, tenant_id: uuid.UUID, roots: list[uuid.UUID]
) -> list[asyncpg.Record]:
    """Revokes the live keys minted by `roots`, transitively, and returns them. The walk follows live keys only
    (a revoked key's children were revoked with it), so it costs at most the tenant's live keys. The caller
    repeats it with every key revoked so far until it returns nothing: a key minted (and committed) under one
    of them while this statement ran is found by the next call."""
    return await db.fetch(
        f"""WITH RECURSIVE minted AS (
                SELECT id FROM api_key
                WHERE tenant_id = $1 AND created_by_key = ANY($2::uuid[]) AND NOT revoked
                UNION
                SELECT k.id FROM api_key k JOIN minted m ON k.created_by_key = m.id
                WHERE k.tenant_id = $1 AND NOT k.revoked
            )
            UPDATE api_key SET revoked = true, revoked_at = now()
            WHERE tenant_id = $1 AND id IN (SELECT id FROM minted) AND NOT revoked
            RETURNING {KEY_COLUMNS}""",
        tenant_id,
        roots,
    )


async def keys_revoked_now(db: Executor, tenant_id: uuid.UUID) -> list[asyncpg.Record]:
    """The tenant's keys revoked in this transaction (`revoked_at` is its start, `now()`), oldest first: after a
    delete of keys, whose live descendants its trigger revoked (migration 2026-12-10T07:00)."""
    return await db.fetch(
        f"""SELECT {KEY_COLUMNS} FROM api_key WHERE tenant_id = $1 AND revoked AND revoked_at = now()
            ORDER BY created_at, id""",
        tenant_id,
    )


async def api_key_by_id(db: Executor, tenant_id: uuid.UUID, key_id: uuid.UUID) -> asyncpg.Record | None:
    return await db.fetchrow(
        f"SELECT {KEY_COLUMNS} FROM api_key WHERE tenant_id = $1 AND id = $2",
        tenant_id,
        key_id,
    )


async def api_keys_by_ids(db: Executor, tenant_id: uuid.UUID, ids: list[uuid.UUID]) -> list[asyncpg.Record]:
    return await db.fetch(
        f"SELECT {KEY_COLUMNS} FROM api_key WHERE tenant_id = $1 AND id = ANY($2::uuid[])", tenant_id, ids
    )


async def count_minted_api_keys_of(
    db: Executor, tenant_id: uuid.UUID, key_ids: list[uuid.UUID], user_id: uuid.UUID | None
) -> list[asyncpg.Record]:
    """How many keys each of `key_ids` minted (only `user_id`'s when given): a row (created_by_key, n) per key
    that minted any."""
    return await db.fetch(
        """SELECT created_by_key, count(*) AS n FROM api_key
           WHERE tenant_id = $1 AND created_by_key = ANY($2::uuid[]) AND ($3::uuid IS NULL OR user_id = $3)
           GROUP BY created_by_key""",
        tenant_id,
        key_ids,
        user_id,
    )


async def minted_api_keys(
    db: Executor,
    tenant_id: uuid.UUID,
    key_id: uuid.UUID,
    user_id: uuid.UUID | None,
    limit: int,
    after: tuple[object, ...] | None,
) -> list[asyncpg.Record]:
    """Keys minted by `key_id`, oldest first; only `user_id`'s when given (a non-admin sees their own keys)."""
    return await db.fetch(
        f"""SELECT {KEY_COLUMNS} FROM api_key
            WHERE tenant_id = $1 AND created_by_key = $2 AND ($3::uuid IS NULL OR user_id = $3)
              AND ($4::timestamptz IS NULL OR (created_at, id) > ($4, $5::uuid))
            ORDER BY created_at, id LIMIT $6""",
        tenant_id,
        key_id,
        user_id,
        after[0] if after else None,
        after[1] if after else None,
        limit,
    )


async def user_api_keys(
    db: Executor, tenant_id: uuid.UUID, user_id: uuid.UUID, limit: int, after: tuple[object, ...] | None
) -> list[asyncpg.Record]:
    """The user's keys, oldest first, revoked ones included."""
    return await db.fetch(
        f"""SELECT {KEY_COLUMNS} FROM api_key
            WHERE tenant_id = $1 AND user_id = $2
              AND ($3::timestamptz IS NULL OR (created_at, id) > ($3, $4::uuid))
            ORDER BY created_at, id LIMIT $5""",
        tenant_id,
        user_id,
        after[0] if after else None,
        after[1] if after else None,
        limit,
    )


async def count_user_api_keys(db: Executor, tenant_id: uuid.UUID, user_id: uuid.UUID) -> int:
    return int(
        await db.fetchval(
            "SELECT count(*) FROM api_key WHERE tenant_id = $1 AND user_id = $2", tenant_id, user_id
        )
    )


async def principal_by_key_hash(db: Executor, key_hash: str) -> asyncpg.Record | None:
    """Not tenant-scoped by design: the key is what tells us the tenant."""
    return await db.fetchrow(
        """SELECT u.tenant_id, u.id AS user_id, k.id AS key_id, u.role, u.team, t.settings ->> 'piiPolicy' AS pii_policy
           FROM api_key k JOIN app_user u ON u.id = k.user_id JOIN tenant t ON t.id = u.tenant_id
           WHERE k.key_hash = $1 AND NOT k.revoked""",
        key_hash,
    )


async def tenant_exists(db: Executor, tenant_id: uuid.UUID) -> bool:
    return bool(await db.fetchval("SELECT EXISTS (SELECT 1 FROM tenant WHERE id = $1)", tenant_id))
