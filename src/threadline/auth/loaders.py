"""Request-wide loaders of users (graphql/loaders.py): every author, owner and actor of a response in one
statement. Rows come back as stored; `auth/types.py` builds the `User`."""

from __future__ import annotations

import uuid

import asyncpg

from threadline.auth import repository as repo
from threadline.auth.principal import Principal
from threadline.graphql.context import Info
from threadline.graphql.loaders import DataLoader, single_loader

USERS = "users"  # the loader's name (graphql.ready reads what it holds)


def users(info: Info, principal: Principal) -> DataLoader[uuid.UUID, asyncpg.Record | None]:
    """The request's loader of users of the caller's tenant by id."""
    db = info.context.db
    return single_loader(
        info, USERS, lambda ids: repo.users_by_ids(db, principal.tenant_id, ids), key=lambda row: row["id"]
    )


async def user(info: Info, user_id: uuid.UUID) -> asyncpg.Record | None:
    """A user of the caller's tenant by id (None if there is none)."""
    principal = await info.context.principal()
    return await users(info, principal).load(user_id)
