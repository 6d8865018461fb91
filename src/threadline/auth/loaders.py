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
from threadline.graphql.loaders import DataLoader, counting_loader, single_loader

USERS = "users"  # the loader's name (graphql.ready reads what it holds)
API_KEYS = "api_keys"
MINTED_COUNTS = "api_keys_minted_counts"


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


async def api_key(info: Info, key_id: uuid.UUID) -> asyncpg.Record | None:
    """An API key of the caller's tenant by id, as stored (never its secret), batched with the request's other
    lookups of keys (`ApiKey.createdByKey` on a page of keys: one statement, not one per key). Whether the caller
    may see it is auth.service's to say."""
    principal = await info.context.principal()
    db = info.context.db
    loader = single_loader(
        info,
        API_KEYS,
        lambda ids: repo.api_keys_by_ids(db, principal.tenant_id, ids),
        key=lambda row: row["id"],
    )
    return await loader.load(key_id)


async def minted_count(info: Info, key_id: uuid.UUID, only_user: uuid.UUID | None) -> int:
    """How many keys `key_id` minted (`only_user`'s alone when given: the same for the whole request, as it
    follows the caller), batched across the keys of the request (`mintedKeys.totalCount` on a page of keys)."""
    principal = await info.context.principal()
    db = info.context.db
    loader = counting_loader(
        info,
        MINTED_COUNTS,
        lambda ids: repo.count_minted_api_keys_of(db, principal.tenant_id, ids, only_user),
        key=lambda row: row["created_by_key"],
        count=lambda row: int(row["n"]),
    )
    return await loader.load(key_id)
