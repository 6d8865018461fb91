"""Query and Mutation fields of the storage tiers, and `Insights.coldStorage`'s resolver."""

from __future__ import annotations

from typing import Annotated

import strawberry

from threadline.graphql.context import Info
from threadline.tiers import service
from threadline.tiers.types import TierPolicy, TierStorage


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
        return TierPolicy(cold_after_days=await service.policy(info.context.db, principal))

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
        ],
    ) -> TierPolicy:
        principal = await info.context.principal()
        days = await service.set_policy(info.context.db, principal, cold_after_days)
        return TierPolicy(cold_after_days=days)
