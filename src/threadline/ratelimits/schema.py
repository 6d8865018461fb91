"""Rate limits in the API: admin fields for profiles, and their enforcement on every operation."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any

import strawberry
from graphql import ExecutionResult as GraphQLExecutionResult
from graphql import (
    FragmentDefinitionNode,
    GraphQLError,
    OperationType,
    get_operation_ast,
)
from starlette.responses import Response
from strawberry.extensions import SchemaExtension
from strawberry.types.graphql import OperationType as ExecutedOperation

from threadline.errors import ErrorCode, ThreadlineError
from threadline.graphql.context import Context, Info
from threadline.graphql.node import register
from threadline.graphql.selections import root_fields
from threadline.ids import Kind, decode_id
from threadline.ratelimits import addresses, service
from threadline.ratelimits.repository import BUDGET_FIELDS
from threadline.ratelimits.types import (
    EffectiveRateLimit,
    RateLimitProfile,
    RateLimitProfileCreateInput,
    RateLimitProfileUpdateInput,
    input_values,
)


def operation_costs(document: Any, operation_name: str | None) -> dict[str, int]:
    operation = get_operation_ast(document, operation_name)
    if operation is None or operation.operation is not OperationType.MUTATION:
        return {"requests": 1}
    fragments = {d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)}
    fields = [field.name.value for field in root_fields(operation.selection_set, fragments)]
    return {"requests": 1, "mutations": len(fields), "runs": fields.count("runCreate")}


def _report(response: Any, budget: service.Budget) -> None:
    if isinstance(response, Response):
        response.headers["RateLimit-Limit"] = str(budget.limit)
        response.headers["RateLimit-Remaining"] = str(budget.remaining)
        response.headers["RateLimit-Reset"] = str(budget.reset_seconds)


class RateLimits(SchemaExtension):
    """Draws each query and mutation from the caller's budgets before it executes (subscriptions: see
    `subscription_started`). What runs anonymously (introspection, shared links) is counted per client address
    (`service.anonymous_windows`); anything else fails authentication before it executes."""

    async def on_execute(self) -> AsyncIterator[None]:
        execution = self.execution_context
        context = execution.context
        if (
            isinstance(context, Context)
            and context.settings.rate_limit_enabled
            and execution.graphql_document
        ):
            costs = operation_costs(execution.graphql_document, execution.operation_name)
            # strawberry's OperationType: graphql-core's SUBSCRIPTION is another enum and never matched.
            if execution.operation_type is not ExecutedOperation.SUBSCRIPTION:
                refusal = await draw(context, costs)
                if refusal is not None:
                    execution.result = refusal
        yield
        if isinstance(context, Context):
            answer_late_refusal(context, getattr(execution.result, "errors", None))


def answer_late_refusal(context: Context, errors: list[GraphQLError] | None) -> None:
    """A resolver that drew more by the size of its input (`service.spend_by_size`) and was refused is
    answered like a refusal before execution: 429 with Retry-After and the budget's headers."""
    for error in errors or ():
        refusal = getattr(error, "original_error", None)
        if isinstance(refusal, service.RateLimited) and isinstance(context.response, Response):
            _report(context.response, refusal.budget)
            context.response.status_code = 429
            context.response.headers["Retry-After"] = str(refusal.extensions["retryAfter"])
            return


async def draw(context: Context, costs: dict[str, int]) -> GraphQLExecutionResult | None:
    """Draws `costs` from the caller's budgets (the budget's headers on the response); the operation's result
    when refused (429 with Retry-After), None when it may run."""
    try:
        principal = await context.principal()
    except ThreadlineError as exc:
        if exc.code is not ErrorCode.UNAUTHENTICATED:
            return None  # e.g. the database is down: the operation fails on its own (UNAVAILABLE)
        principal = None
    try:
        if principal is None:
            # What runs without credentials (introspection, shared links): counted per client address.
            service.anonymous_windows.take(context.settings, addresses.counted(context.request))
            return None
        budget = await service.spend(context.db, context.settings, principal, costs)
    except service.RateLimited as exc:
        refused = GraphQLExecutionResult(data=None, errors=[GraphQLError(exc.message, original_error=exc)])
        _report(context.response, exc.budget)
        if isinstance(context.response, Response):
            context.response.status_code = 429
            context.response.headers["Retry-After"] = str(exc.extensions["retryAfter"])
        return refused
    _report(context.response, budget)
    return None


async def subscription_started(info: Info) -> None:
    """Draws one subscription start from the caller's budget; RATE_LIMITED (with retryAfter) when spent."""
    context = info.context
    if context.settings.rate_limit_enabled:
        principal = await context.principal()
        await service.spend(context.db, context.settings, principal, {"requests": 0, "subscriptions": 1})


@strawberry.type
class RateLimitQuery:
    @strawberry.field(description="The tenant's rate-limit profiles, by name (admins only).")
    async def rate_limit_profiles(self, info: Info) -> list[RateLimitProfile]:
        principal = await info.context.principal()
        return [RateLimitProfile.from_row(r) for r in await service.list_profiles(info.context.db, principal)]

    @strawberry.field(
        description="The budgets that apply to a user (the caller by default; other users: admins only)."
    )
    async def rate_limit(
        self,
        info: Info,
        user_id: Annotated[
            strawberry.ID | None,
            strawberry.argument(
                description="The user (`User.id`); the caller when omitted. Others' need an admin."
            ),
        ] = None,
    ) -> EffectiveRateLimit:
        principal = await info.context.principal()
        uid = decode_id(user_id, Kind.USER) if user_id is not None else principal.user_id
        row = await service.effective_profile(info.context.db, principal, uid)
        return EffectiveRateLimit.of(row, info.context.settings)


@strawberry.type
class RateLimitMutation:
    @strawberry.mutation(description="Create a rate-limit profile (admins only); effective at once.")
    async def rate_limit_profile_create(
        self,
        info: Info,
        input: Annotated[
            RateLimitProfileCreateInput,
            strawberry.argument(
                description="The profile's name and budgets; budgets left out take the server's built-in values."
            ),
        ],
    ) -> RateLimitProfile:
        principal = await info.context.principal()
        settings = info.context.settings
        built_in = dict(zip(BUDGET_FIELDS, service.built_in(settings), strict=True))
        values = {k: (built_in.get(k) if v is None else v) for k, v in input_values(input).items()}
        row = await service.create_profile(info.context.db, settings, principal, values)
        return RateLimitProfile.from_row(row)

    @strawberry.mutation(
        description="Change a rate-limit profile (admins only); every process applies it to the next request."
    )
    async def rate_limit_profile_update(
        self,
        info: Info,
        id: Annotated[
            strawberry.ID, strawberry.argument(description="The profile to change (`RateLimitProfile.id`).")
        ],
        input: Annotated[
            RateLimitProfileUpdateInput,
            strawberry.argument(description="The values to change; fields left out keep their value."),
        ],
    ) -> RateLimitProfile:
        principal = await info.context.principal()
        pid = decode_id(id, Kind.RATE_LIMIT_PROFILE)
        values = input_values(input)
        row = await service.update_profile(info.context.db, info.context.settings, principal, pid, values)
        return RateLimitProfile.from_row(row)

    @strawberry.mutation(
        description="Delete a rate-limit profile (admins only); its users fall back to the tenant default."
    )
    async def rate_limit_profile_delete(
        self,
        info: Info,
        id: Annotated[
            strawberry.ID, strawberry.argument(description="The profile to delete (`RateLimitProfile.id`).")
        ],
    ) -> bool:
        principal = await info.context.principal()
        return await service.delete_profile(
            info.context.db, principal, decode_id(id, Kind.RATE_LIMIT_PROFILE)
        )

    @strawberry.mutation(
        description="Assign a profile to a user (admins only), or with `profileId: null` return them to the "
        "tenant default; effective at once."
    )
    async def rate_limit_profile_assign(
        self,
        info: Info,
        user_id: Annotated[strawberry.ID, strawberry.argument(description="The user to assign (`User.id`).")],
        profile_id: Annotated[
            strawberry.ID | None,
            strawberry.argument(
                description="The profile (`RateLimitProfile.id`); null or omitted: the tenant default."
            ),
        ] = None,
    ) -> EffectiveRateLimit:
        principal = await info.context.principal()
        uid = decode_id(user_id, Kind.USER)
        pid = decode_id(profile_id, Kind.RATE_LIMIT_PROFILE) if profile_id is not None else None
        row = await service.assign_profile(info.context.db, principal, uid, pid)
        return EffectiveRateLimit.of(row, info.context.settings)


async def _profile_node(info: Info, profile_id: uuid.UUID) -> RateLimitProfile:
    principal = await info.context.principal()
    return RateLimitProfile.from_row(await service.readable_profile(info.context.db, principal, profile_id))


register(Kind.RATE_LIMIT_PROFILE, _profile_node)
