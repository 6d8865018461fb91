"""GraphQL types of rate-limit profiles."""

from __future__ import annotations

from datetime import datetime

import asyncpg
import strawberry

from threadline.graphql.node import Node
from threadline.ids import Kind, encode_id
from threadline.ratelimits.repository import BUDGET_FIELDS
from threadline.ratelimits.service import built_in, clamped
from threadline.settings import Settings


@strawberry.type(
    description="A named set of budgets. Each budget refills `...PerWindow` tokens every `windowSeconds` and "
    "holds at most `...PerWindow + burst`; over budget, calls fail with RATE_LIMITED and `retryAfter`."
)
class RateLimitProfile(Node):
    name: str = strawberry.field(description="Unique within the tenant.")
    window_seconds: int = strawberry.field(description="Length of the window the budgets refill over.")
    burst: int = strawberry.field(description="Tokens each budget may hold beyond its per-window amount.")
    requests_per_window: int = strawberry.field(description="Operations of any kind (queries and mutations).")
    mutations_per_window: int = strawberry.field(description="Top-level mutation fields.")
    runs_per_window: int = strawberry.field(description="`runCreate` calls.")
    subscriptions_per_window: int = strawberry.field(description="Subscription starts.")
    is_default: bool = strawberry.field(
        description="Applies to every user of the tenant without an assigned profile."
    )
    created_at: datetime = strawberry.field(description="When the profile was created.")
    updated_at: datetime = strawberry.field(description="When the profile last changed.")

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> RateLimitProfile:
        return cls(
            id=strawberry.ID(encode_id(Kind.RATE_LIMIT_PROFILE, row["id"])),
            name=row["name"],
            is_default=row["is_default"],
            created_at=row["created_at"],
            updated_at=row["updated_at"],
            **{name: row[name] for name in BUDGET_FIELDS},
        )


@strawberry.type(description="The budgets that apply to a user, and the profile they come from.")
class EffectiveRateLimit:
    profile: RateLimitProfile | None = strawberry.field(
        description="The assigned profile, else the tenant's default; null when the server's built-in budgets apply."
    )
    window_seconds: int = strawberry.field(description="Length of the window the budgets refill over.")
    burst: int = strawberry.field(description="Tokens each budget may hold beyond its per-window amount.")
    requests_per_window: int = strawberry.field(description="Operations of any kind (queries and mutations).")
    mutations_per_window: int = strawberry.field(description="Top-level mutation fields.")
    runs_per_window: int = strawberry.field(description="`runCreate` calls.")
    subscriptions_per_window: int = strawberry.field(description="Subscription starts.")

    @classmethod
    def of(cls, row: asyncpg.Record | None, settings: Settings) -> EffectiveRateLimit:
        if row is None:
            return cls(profile=None, **dict(zip(BUDGET_FIELDS, built_in(settings), strict=True)))
        # What is enforced: the operator's ceilings clamp a tenant's profile (service.clamped).
        budgets = clamped({name: row[name] for name in BUDGET_FIELDS}, settings)
        return cls(profile=RateLimitProfile.from_row(row), **budgets)


@strawberry.input(description="A new rate-limit profile; budgets left out take the server's built-in values.")
class RateLimitProfileCreateInput:
    name: str = strawberry.field(description="Unique within the tenant.")
    window_seconds: int | None = strawberry.field(default=None, description="1 to 86400 seconds.")
    burst: int | None = strawberry.field(default=None, description="Extra tokens each budget may hold.")
    requests_per_window: int | None = strawberry.field(default=None, description="Operations per window.")
    mutations_per_window: int | None = strawberry.field(
        default=None, description="Mutation fields per window."
    )
    runs_per_window: int | None = strawberry.field(default=None, description="`runCreate` calls per window.")
    subscriptions_per_window: int | None = strawberry.field(
        default=None, description="Subscription starts per window."
    )
    is_default: bool | None = strawberry.field(
        default=None, description="Make it the tenant's default (the previous default stops being one)."
    )


@strawberry.input(description="Changes to a rate-limit profile; fields left out stay as they are.")
class RateLimitProfileUpdateInput:
    name: str | None = strawberry.field(default=None, description="Unique within the tenant.")
    window_seconds: int | None = strawberry.field(default=None, description="1 to 86400 seconds.")
    burst: int | None = strawberry.field(default=None, description="Extra tokens each budget may hold.")
    requests_per_window: int | None = strawberry.field(default=None, description="Operations per window.")
    mutations_per_window: int | None = strawberry.field(
        default=None, description="Mutation fields per window."
    )
    runs_per_window: int | None = strawberry.field(default=None, description="`runCreate` calls per window.")
    subscriptions_per_window: int | None = strawberry.field(
        default=None, description="Subscription starts per window."
    )
    is_default: bool | None = strawberry.field(
        default=None, description="true makes it the tenant's default; false stops it being the default."
    )


def input_values(data: RateLimitProfileCreateInput | RateLimitProfileUpdateInput) -> dict[str, object]:
    return {
        "name": data.name,
        **{name: getattr(data, name) for name in BUDGET_FIELDS},
        "is_default": data.is_default,
    }
