"""Query and Mutation fields of users and API keys."""

from __future__ import annotations

import uuid
from typing import Annotated

import strawberry

from threadline import crypto
from threadline.auth import repository as repo
from threadline.auth import service
from threadline.auth.principal import Role
from threadline.auth.types import ApiKey, ApiKeyCreatePayload, RoleEnum, User, UserCreateInput
from threadline.crypto.rotation import shred as shred_keys
from threadline.errors import not_found
from threadline.graphql.context import Info
from threadline.graphql.node import register
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
from threadline.ids import Kind, decode_id, encode_id
from threadline.porting import erasure
from threadline.porting.types import UserErasure


@strawberry.type
class AuthQuery:
    @strawberry.field(description="The authenticated caller.")
    async def viewer(self, info: Info) -> User:
        principal = await info.context.principal()
        row = await repo.user_by_id(info.context.db, principal.tenant_id, principal.user_id)
        if row is None:
            raise not_found("User")
        return User.from_row(row)

    @strawberry.field(description="Users of the caller's tenant, oldest first (any member may list them).")
    async def users(self, info: Info, first: First = None, after: After = None) -> Connection[User]:
        principal = await info.context.principal()
        settings = info.context.settings
        limit = page_size(first, settings.page_size_default, settings.page_size_max)
        cursor = decode_cursor(after, (as_datetime, as_uuid)) if after else None
        db = info.context.db
        rows = await repo.list_users(db, principal.tenant_id, limit + 1, cursor)
        return connection(
            rows,
            limit,
            User.from_row,
            lambda r: (r["created_at"], r["id"]),
            lambda: repo.count_users(db, principal.tenant_id),
            has_previous=cursor is not None,
        )


@strawberry.type
class AuthMutation:
    @strawberry.mutation(description="Create a user in the caller's tenant (admins only).")
    async def user_create(
        self,
        info: Info,
        input: Annotated[UserCreateInput, strawberry.argument(description="The new user's fields.")],
    ) -> User:
        principal = await info.context.principal()
        row = await service.create_user(
            info.context.db,
            principal,
            email=input.email,
            display_name=input.display_name,
            role=Role(input.role),
            team=input.team,
        )
        return User.from_row(row)

    @strawberry.mutation(
        description="Change a user's role in the tenant (admins only, not their own). The stored role is the "
        "one that counts, also for JWT users after their first sign-in; open WebSockets of the user see it at "
        "once."
    )
    async def user_role_set(
        self,
        info: Info,
        user_id: Annotated[strawberry.ID, strawberry.argument(description="The user whose role changes.")],
        role: Annotated[
            RoleEnum, strawberry.argument(description="The new role.")  # type: ignore[valid-type]
        ],
    ) -> User:
        principal = await info.context.principal()
        target = decode_id(user_id, Kind.USER)
        row = await service.set_user_role(info.context.db, principal, target, Role(role))
        return User.from_row(row)

    @strawberry.mutation(
        description="Create an API key for a user (admins for anyone, others for themselves). "
        "The secret is returned only here. Created with an API key, the new key records it "
        "(`ApiKey.createdByKey`) and is revoked whenever that key is. A user holds at most 100 live keys "
        "(CONFLICT beyond)."
    )
    async def api_key_create(
        self,
        info: Info,
        user_id: Annotated[
            strawberry.ID, strawberry.argument(description="The user the key authenticates as (`User.id`).")
        ],
        name: Annotated[
            str,
            strawberry.argument(
                description="A label to recognise the key by (where it is used); at most 200 characters, trimmed. "
                "Empty by default."
            ),
        ] = "",
    ) -> ApiKeyCreatePayload:
        principal = await info.context.principal()
        row, secret = await service.create_api_key(
            info.context.db, principal, decode_id(user_id, Kind.USER), name
        )
        return ApiKeyCreatePayload(api_key=ApiKey.from_row(row), secret=secret)

    @strawberry.mutation(
        description="Revoke an API key: your own, or (admins) any key of the tenant; it stops authenticating "
        "at once, also on open WebSockets. Every key it minted (`ApiKey.mintedKeys`) is revoked with it, "
        "transitively, in the same transaction; each is audited as `api_key.revoke` with "
        "`details.cascadedFrom`."
    )
    async def api_key_revoke(
        self,
        info: Info,
        id: Annotated[strawberry.ID, strawberry.argument(description="The key's id (`ApiKey.id`).")],
    ) -> ApiKey:
        principal = await info.context.principal()
        row = await service.revoke_api_key(info.context.db, principal, decode_id(id, Kind.API_KEY))
        return ApiKey.from_row(row)


@strawberry.type
class UserErasureMutation:
    """Erasure of a user and their data (the work is porting/erasure.py's, with export and retention)."""

    @strawberry.mutation(
        description="Erase a user (admins only), in one transaction: hard-delete the conversations they own, "
        "empty their messages elsewhere (replies to them stay readable) and attribute them to an anonymous "
        "placeholder, delete their keys and memberships and the user. `redactMessages: false` keeps the text "
        "of their messages elsewhere, anonymised. Audited. With encryption at rest and `redactMessages: true`, "
        "their data key is erased too (crypto-shredding): backups of what they wrote become unreadable."
    )
    async def user_erase(
        self,
        info: Info,
        user_id: Annotated[strawberry.ID, strawberry.argument(description="The user to erase (`User.id`).")],
        redact_messages: Annotated[
            bool,
            strawberry.argument(
                description="true (default): empty the text of their messages in others' conversations; false: "
                "keep it, attributed to the anonymous placeholder."
            ),
        ] = True,
    ) -> UserErasure:
        principal = await info.context.principal()
        erased = decode_id(user_id, Kind.USER)
        done = await erasure.erase_user(info.context.db, principal, erased, redact_messages=redact_messages)
        if redact_messages:
            # Crypto-shredding (encryption at rest): what they wrote stays unreadable in backups too. Kept when
            # their text is kept (redactMessages: false), which their key still opens.
            await shred_keys(crypto.active(), info.context.db, principal.tenant_id, erased)
        placeholder = await repo.user_by_id(info.context.db, principal.tenant_id, done.placeholder_id)
        return UserErasure(
            user_id=strawberry.ID(encode_id(Kind.USER, done.user_id)),
            placeholder=User.from_row(placeholder) if placeholder else None,
            conversations_deleted=done.conversations_deleted,
            messages_redacted=done.messages_redacted,
            messages_reassigned=done.messages_reassigned,
        )


async def _user_node(info: Info, user_id: uuid.UUID) -> User | None:
    principal = await info.context.principal()
    row = await repo.user_by_id(info.context.db, principal.tenant_id, user_id)
    return User.from_row(row) if row else None


async def _api_key_node(info: Info, key_id: uuid.UUID) -> ApiKey:
    principal = await info.context.principal()
    return ApiKey.from_row(await service.readable_api_key(info.context.db, principal, key_id))


register(Kind.USER, _user_node)
register(Kind.API_KEY, _api_key_node)
