"""Query and Mutation fields of the storage tiers, and `Insights.coldStorage`'s resolver."""

from __future__ import annotations

import asyncio
import weakref
from typing import Annotated
from uuid import UUID

import strawberry

from threadline.errors import ErrorCode, ThreadlineError
from threadline.graphql.arguments import given
from threadline.graphql.context import Info
from threadline.graphql.loaders import single_loader
from threadline.tiers import repository as repo
from threadline.tiers import service
from threadline.tiers.types import (
    ConversationStorage,
    StorageTier,
    TierPolicy,
    TierRestoreProgress,
    TierRestoreState,
    TierStorage,
)


async def cold_storage(info: Info) -> TierStorage | None:
    """`Insights.coldStorage`: the tenant's, for admins; null for anyone else."""
    principal = await info.context.principal()
    if not principal.is_admin:
        return None
    return TierStorage.of(await service.storage(info.context.db, principal.tenant_id))


@strawberry.type
class TierQuery:
    @strawberry.field(description="The tenant's storage tier policy (admins only).")
    async def tier_policy(self, info: Info) -> TierPolicy:
        principal = await info.context.principal()
        return TierPolicy(
            cold_after_days=await service.policy(info.context.db, principal),
            deep_after_days=await service.deep_policy(info.context.db, principal),
        )

    @strawberry.field(
        description="What the tenant's cold tier holds and the storage it saves (admins only; also in "
        "`insights { coldStorage }`)."
    )
    async def tier_storage(self, info: Info) -> TierStorage:
        principal = await info.context.principal()
        service.require_admin(principal, "read the storage tiers")
        return TierStorage.of(await service.storage(info.context.db, principal.tenant_id))


@strawberry.type
class TierMutation:
    @strawberry.mutation(
        description="Set the tenant's storage tier policy (admins only): conversations archived, or without "
        "activity, for longer than `coldAfterDays` move into one compressed document each (by the background "
        "pass: `threadline tiers run`, or `threadline worker`); null: none does. Metadata, counts and title "
        "search stay hot; a read or write of a cold conversation brings it back first."
    )
    async def tier_policy_set(
        self,
        info: Info,
        cold_after_days: Annotated[
            int | None,
            strawberry.argument(
                description="Days (1 to 36,500) before a conversation goes cold; null: never."
            ),
        ] = strawberry.UNSET,
    ) -> TierPolicy:
        cold_after_days = given(cold_after_days, "coldAfterDays", "keeps every conversation hot")
        principal = await info.context.principal()
        days = await service.set_policy(info.context.db, principal, cold_after_days)
        return TierPolicy(
            cold_after_days=days, deep_after_days=await service.deep_policy(info.context.db, principal)
        )

    @strawberry.mutation(
        description="Set when cold documents move to deep storage (admins only): older than `deepAfterDays` "
        "(counted from when they went cold) they are recompressed harder by the background pass, and content "
        "reads are CONFLICT until `conversationRestore` brings them back (progress in `Conversation.storage`); "
        "null: none does. Erasure, anonymisation and data exports still reach them."
    )
    async def tier_deep_policy_set(
        self,
        info: Info,
        deep_after_days: Annotated[
            int | None,
            strawberry.argument(
                description="Days (1 to 36,500) a document stays cold before deep storage; null: never."
            ),
        ] = strawberry.UNSET,
    ) -> TierPolicy:
        deep_after_days = given(deep_after_days, "deepAfterDays", "keeps cold documents out of deep storage")
        principal = await info.context.principal()
        days = await service.set_deep_policy(info.context.db, principal, deep_after_days)
        return TierPolicy(
            cold_after_days=await service.policy(info.context.db, principal), deep_after_days=days
        )


# Restores one request may start from conversation lists (each takes a pooled connection and up to a second or
# two for a long conversation); past it the request is RATE_LIMITED and a retry goes on with the next ones.
RESTORES_PER_REQUEST = 5
_restores: dict[
    int, dict[UUID, asyncio.Task[bool]]
] = {}  # per request (its context): one task per conversation


async def warm(info: Info, conversation_id: UUID, cold: bool) -> None:
    """Before a conversation's content is read through a conversation in a list (`Conversation.threads`,
    `messages`, `runs`): a cold one comes back first. The caller could see the conversation, so may read it.

    Each restore is a task of its own, shielded: an error elsewhere in the request (the cap below) cancels the
    resolver, not a restore half way; the one over the cap waits for those under way before it answers."""
    if not cold:
        return
    principal = await info.context.principal()
    key = id(info.context)  # from here to the append, no await: the cap holds among concurrent resolvers
    if key not in _restores:
        _restores[key] = {}
        weakref.finalize(info.context, _restores.pop, key, None)
    started = _restores[key]
    if conversation_id in started:  # its threads, messages and runs asked together: one restore
        await asyncio.shield(started[conversation_id])
        return
    if len(started) >= RESTORES_PER_REQUEST:
        await asyncio.gather(*started.values(), return_exceptions=True)
        raise ThreadlineError(
            ErrorCode.RATE_LIMITED,
            f"At most {RESTORES_PER_REQUEST} cold conversations are brought back per request; retry for the next "
            "ones (those brought back are hot now)",
            retryAfter=1,
        )
    task = asyncio.ensure_future(service.restore(info.context.db, principal.tenant_id, conversation_id))
    started[conversation_id] = task
    await asyncio.shield(task)


async def conversation_storage(info: Info, conversation_id: UUID) -> ConversationStorage:
    """`Conversation.storage`, for every conversation of the response in one statement."""
    principal = await info.context.principal()
    db = info.context.db
    loader = single_loader(
        info,
        "tiers:storage",
        lambda ids: repo.storage_states(db, principal.tenant_id, ids),
        key=lambda row: row["id"],
    )
    row = await loader.load(conversation_id)
    if row is None:
        return ConversationStorage(tier=StorageTier.HOT, restore=None)
    tier = (
        StorageTier.DEEP
        if row["cold"] and row["deep"]
        else StorageTier.COLD
        if row["cold"]
        else StorageTier.HOT
    )
    restore = (
        TierRestoreProgress(
            state=TierRestoreState(row["state"]),
            rows_done=row["rows_done"],
            rows_total=row["rows_total"],
            started_at=row["started_at"],
            updated_at=row["updated_at"],
        )
        if row["state"] is not None
        else None
    )
    return ConversationStorage(tier=tier, restore=restore)
