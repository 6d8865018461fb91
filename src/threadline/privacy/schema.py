"""Query and mutation fields of the privacy package: the PII policy and anonymisation."""

from __future__ import annotations

from typing import Annotated

import strawberry

from threadline.graphql.context import Info
from threadline.ids import Kind, decode_id, encode_id
from threadline.privacy import policy
from threadline.privacy.anonymise import anonymise_user
from threadline.privacy.types import PiiPolicy, UserAnonymisation


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

    @strawberry.mutation(
        description="Anonymise a user (admins only; audited as user.anonymise): unlike `userErase`, their "
        "conversations and messages stay for the team, but a pseudonym of their own replaces them everywhere "
        "(authorship, ownership, memberships, audit entries, logged events), the PII in everything they wrote "
        "is masked whatever the tenant's policy (content, parts, earlier versions, chunks, feedback comments, "
        "titles of their conversations, logged events, search), and their credentials go. NOT_FOUND for a user "
        "of another tenant; FORBIDDEN for yourself."
    )
    async def user_anonymise(
        self,
        info: Info,
        user_id: Annotated[strawberry.ID, strawberry.argument(description="The user to anonymise.")],
    ) -> UserAnonymisation:
        principal = await info.context.principal()
        done = await anonymise_user(info.context.db, principal, decode_id(user_id, Kind.USER))
        return UserAnonymisation(
            user_id=strawberry.ID(encode_id(Kind.USER, done.user_id)),
            pseudonym_id=strawberry.ID(encode_id(Kind.USER, done.pseudonym_id)),
            messages=done.messages,
            messages_masked=done.messages_masked,
            detections=done.detections,
        )
