"""Request-wide loaders of users (graphql/loaders.py): every author, owner and actor of a response in one
statement. Rows come back as stored; `auth/types.py` builds the `User`."""

from __future__ import annotations

import uuid

import asyncpg

from threadline.auth import repository as repo
from threadline.graphql.context import Info
from threadline.graphql.loaders import single_loader


async def user(info: Info, user_id: uuid.UUID) -> asyncpg.Record | None:
    """A user of the caller's tenant by id (None if there is none)."""
    principal = await info.context.principal()
    db = info.context.db
    loader = single_loader(
        info, "users", lambda ids: repo.users_by_ids(db, principal.tenant_id, ids), key=lambda row: row["id"]
    )
    return await loader.load(user_id)
