"""Query and mutation fields of the privacy package: the PII policy and anonymisation."""

from __future__ import annotations

from typing import Annotated

import strawberry

from threadline.graphql.context import Info
from threadline.privacy import policy
from threadline.privacy.types import PiiPolicy


@strawberry.type
class PrivacyQuery:
    @strawberry.field(
        description="The tenant's PII policy (`tenantPiiPolicySet`): OFF, DETECT, MASK_ON_WRITE or MASK_ON_READ."
    )
    async def pii_policy(self, info: Info) -> PiiPolicy:  # type: ignore[valid-type]
        principal = await info.context.principal()
        return await policy.tenant_policy(info.context.db, principal.tenant_id)


@strawberry.type
class PrivacyMutation:
    @strawberry.mutation(
        description="Set the tenant's PII policy (admins only; audited). It applies to what is written from now "
        "on, and to every read under MASK_ON_READ; `threadline pii backfill` applies it to content written "
        "before. Returns the policy now in force."
    )
    async def tenant_pii_policy_set(
        self,
        info: Info,
        policy_value: Annotated[
            PiiPolicy,  # type: ignore[valid-type]
            strawberry.argument(name="policy", description="The new policy."),
        ],
    ) -> PiiPolicy:  # type: ignore[valid-type]
        principal = await info.context.principal()
        return await policy.set_policy(info.context.db, principal, policy.PiiPolicy(policy_value))
