"""GraphQL types of users and API keys."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import asyncpg
import strawberry

from threadline.auth import loaders, service
from threadline.auth.principal import Role
from threadline.graphql.context import Info
from threadline.graphql.describe import describe_values
from threadline.graphql.node import Node
from threadline.graphql.pagination import (
    After,
    Connection,
    First,
    as_datetime,
    as_uuid,
    connection,
    decode_cursor,
    page_size,
)
from threadline.graphql.ready import NOT_READY, loaded
from threadline.ids import Kind, decode_id, encode_id

RoleEnum = strawberry.enum(Role, name="Role", description="A user's role in their tenant.")
describe_values(
    RoleEnum,
    {
        "ADMIN": "Sees and manages the whole tenant: users, API keys, rate limits, retention, erasure, the audit "
        "log, every conversation.",
        "MANAGER": "A MEMBER who also reads the conversations of their team's users (`User.team`).",
        "MEMBER": "Sees the conversations they own or take part in.",
    },
)


@strawberry.type(description="A person (or service) in a tenant.")
class User(Node):
    email: str | None = strawberry.field(description="Email address, if known.")
    display_name: str = strawberry.field(description="Name shown to others.")
    role: RoleEnum = strawberry.field(  # type: ignore[valid-type]
        description="ADMIN sees the whole tenant, MANAGER their team's conversations."
    )
    team: str | None = strawberry.field(description="Team name, used for MANAGER visibility.")
    created_at: datetime = strawberry.field(description="When the user was created.")
    uuid: strawberry.Private[uuid.UUID]

    @strawberry.field(
        description="The user's API keys, oldest first, revoked ones included (never their secrets): to find a "
        "key by its `prefix`, and what it minted (`ApiKey.mintedKeys`). Null unless the caller is this user or "
        "a tenant admin."
    )
    async def api_keys(
        self, info: Info, first: First = None, after: After = None
    ) -> Connection[ApiKey] | None:
        principal = await info.context.principal()
        settings = info.context.settings
        limit = page_size(first, settings.page_size_default, settings.page_size_max)
        cursor = decode_cursor(after, (as_datetime, as_uuid)) if after else None
        found = await service.user_api_keys(info.context.db, principal, self.uuid, limit + 1, cursor)
        if found is None:
            return None
        rows, count = found
        return connection(
            rows,
            limit,
            ApiKey.from_row,
            lambda r: (r["created_at"], r["id"]),
            count,
            has_previous=cursor is not None,
        )

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> User:
        return cls(
            id=strawberry.ID(encode_id(Kind.USER, row["id"])),
            uuid=row["id"],
            email=row["email"],
            display_name=row["display_name"],
            role=Role(row["role"]),
            team=row["team"],
            created_at=row["created_at"],
        )


@strawberry.type(description="An API key. Its secret is shown only once, when it is created.")
class ApiKey(Node):
    name: str = strawberry.field(description="A label for the key.")
    prefix: str = strawberry.field(description="The first characters of the key, to recognise it.")
    revoked: bool = strawberry.field(
        description="A revoked key no longer authenticates. Revoking a key also revokes every key it minted "
        "(`mintedKeys`), transitively."
    )
    revoked_at: datetime | None = strawberry.field(
        description="When the key was revoked, directly or with the key that minted it; null while it is live "
        "(and for keys revoked before this was recorded)."
    )
    created_at: datetime = strawberry.field(description="When the key was created.")
    user_uuid: strawberry.Private[uuid.UUID]
    created_by_key_uuid: strawberry.Private[uuid.UUID | None]

    @strawberry.field(description="The user this key authenticates as.")
    async def user(self, info: Info) -> User | None:
        return await load_user(info, self.user_uuid)

    @strawberry.field(
        description="The API key that minted this key (`apiKeyCreate` called with it), if the caller may read "
        "it (their own key; admins: any). Revoking that key revoked or revokes this one too. Null when a JWT "
        "minted it, when the minting key is gone or not the caller's to see, and for keys minted before lineage "
        "was recorded."
    )
    async def created_by_key(self, info: Info) -> ApiKey | None:
        if self.created_by_key_uuid is None:
            return None
        principal = await info.context.principal()
        row = service.visible_api_key(principal, await loaders.api_key(info, self.created_by_key_uuid))
        return ApiKey.from_row(row) if row is not None else None

    @strawberry.field(
        description="The keys minted with this key (`apiKeyCreate` authenticated by it), oldest first, revoked "
        "ones included: every key of the tenant for an admin, the caller's own keys for anyone else. They are "
        "revoked when this key is."
    )
    async def minted_keys(self, info: Info, first: First = None, after: After = None) -> Connection[ApiKey]:
        principal = await info.context.principal()
        settings = info.context.settings
        limit = page_size(first, settings.page_size_default, settings.page_size_max)
        cursor = decode_cursor(after, (as_datetime, as_uuid)) if after else None
        key_id = decode_id(self.id, Kind.API_KEY)
        rows, only = await service.minted_api_keys(info.context.db, principal, key_id, limit + 1, cursor)
        return connection(
            rows,
            limit,
            ApiKey.from_row,
            lambda r: (r["created_at"], r["id"]),
            lambda: loaders.minted_count(info, key_id, only),
            has_previous=cursor is not None,
        )

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> ApiKey:
        return cls(
            id=strawberry.ID(encode_id(Kind.API_KEY, row["id"])),
            name=row["name"],
            prefix=row["prefix"],
            revoked=row["revoked"],
            revoked_at=row["revoked_at"],
            created_at=row["created_at"],
            user_uuid=row["user_id"],
            created_by_key_uuid=row["created_by_key"],
        )


@strawberry.type(description="A new API key and its plaintext secret (shown this once, never again).")
class ApiKeyCreatePayload:
    api_key: ApiKey = strawberry.field(description="The stored key.")
    secret: str = strawberry.field(
        description="The plaintext key to send as `Authorization: Bearer <secret>`."
    )


@strawberry.input(description="A user to create in the caller's tenant.")
class UserCreateInput:
    email: str = strawberry.field(description="Email address, unique in the tenant.")
    display_name: str | None = strawberry.field(default=None, description="Name shown to others.")
    role: RoleEnum = strawberry.field(  # type: ignore[valid-type]
        default=Role.MEMBER, description="Role in the tenant (default MEMBER)."
    )
    team: str | None = strawberry.field(default=None, description="Team name for MANAGER visibility.")


async def load_user(info: Info, user_id: uuid.UUID | None) -> User | None:
    """Users by id, batched per request (one query for all the authors and owners of a response)."""
    if user_id is None:
        return None
    row = await loaders.user(info, user_id)
    return User.from_row(row) if row is not None else None


def loaded_user(context: Any, user_id: uuid.UUID | None) -> Any:
    """`load_user`'s value when the request's users loader already holds it, else NOT_READY (graphql.ready)."""
    if user_id is None:
        return None
    row = loaded(context, loaders.USERS, user_id)
    if row is NOT_READY or row is None:
        return row
    # One User per loaded row and request (an owner is often every conversation's): the fields only read it.
    cache = context.cache
    users = cache.get(_READY_USERS)
    if users is None:  # not setdefault: it would build a dict on every call
        users = cache[_READY_USERS] = {}
    found = users.get(user_id)
    if found is None or found[0] is not row:
        found = users[user_id] = (row, User.from_row(row))
    return found[1]


_READY_USERS = ("ready", "users")  # Context.cache key of the Users built by loaded_user
