"""All SQL of the privacy package. Tenant first in every signature."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg

from threadline.db import Executor


async def tenant_setting(db: Executor, tenant_id: uuid.UUID, key: str, *, lock: bool = False) -> Any:
    return await db.fetchval(
        "SELECT settings -> $2::text FROM tenant WHERE id = $1" + (" FOR UPDATE" if lock else ""), tenant_id, key
    )


async def set_tenant_setting(db: Executor, tenant_id: uuid.UUID, key: str, value: Any) -> None:
    # Bound as a parameter: Piccolo mangles literal braces.
    await db.execute(
        "UPDATE tenant SET settings = settings || jsonb_build_object($2::text, $3::jsonb) WHERE id = $1",
        tenant_id,
        key,
        value,
    )


async def stored_pii(db: Executor, tenant_id: uuid.UUID, message_ids: list[uuid.UUID]) -> list[asyncpg.Record]:
    return await db.fetch(
        "SELECT id, pii, deleted_at FROM message WHERE tenant_id = $1 AND id = ANY($2::uuid[])",
        tenant_id,
        message_ids,
    )
