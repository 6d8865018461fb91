"""Request-wide loaders of users (graphql/loaders.py): every author, owner and actor of a response in one
statement. Rows come back as stored; `auth/types.py` builds the `User`."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterable

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


async def prefetch_users(info: Info, user_ids: Iterable[uuid.UUID | None]) -> None:
    """Loads these users through the request's loader now (batched with whatever else loads users in the same
    turn of the event loop), so that fields with a synchronous twin find them loaded (graphql.ready). A failed
    load stays in the loader: the fields that need it report it as they would have."""
    wanted = list(dict.fromkeys(u for u in user_ids if u is not None))
    if wanted:
        principal = await info.context.principal()
        await asyncio.gather(users(info, principal).load_many(wanted), return_exceptions=True)
