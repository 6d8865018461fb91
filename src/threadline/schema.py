"""Composes the domain schemas into one strawberry.Schema."""

from __future__ import annotations

import strawberry
from strawberry.tools import merge_types

from threadline.audit.schema import AuditQuery
from threadline.auth import repository as users
from threadline.auth.schema import AuthMutation, AuthQuery
from threadline.auth.types import User
from threadline.conversations.schema import ConversationMutation, ConversationQuery
from threadline.conversations.types import Conversation
from threadline.errors import ThreadlineError
from threadline.graphql.base_schema import ThreadlineSchema
from threadline.graphql.budget import OutputBudgets
from threadline.graphql.context import Info
from threadline.graphql.errors import ErrorCodeEnum, ErrorCodes, SqlStatementCount
from threadline.graphql.limits import query_limits
from threadline.graphql.node import Node
from threadline.graphql.scalars import SCALAR_OVERRIDES
from threadline.idempotency.schema import IdempotencyKeys
from threadline.ids import Kind, parse_id
from threadline.observability.schema import OperationMetrics
from threadline.porting.schema import PortingMutation, PortingQuery
from threadline.presence.schema import PresenceMutation
from threadline.ratelimits.schema import RateLimitMutation, RateLimitQuery, RateLimits
from threadline.runs.schema import RunMutation, RunQuery
from threadline.runs.types import Run, RunStep
from threadline.search.schema import SearchMutation, SearchQuery
from threadline.search.tag_service import TAGS_LIMIT_MAX
from threadline.streaming.fanout import FanoutExecutionContext
from threadline.streaming.schema import StreamQuery, StreamSubscription
from threadline.streaming.types import EVENT_TYPES
from threadline.threads import repository as threads
from threadline.threads import service as thread_service
from threadline.threads.schema import ThreadMutation, ThreadQuery
from threadline.threads.types import Message, Thread


@strawberry.type
class NodeQuery:
    @strawberry.field(description="Any object by its global id, or null if it does not exist or is not visible.")
    async def node(self, info: Info, id: strawberry.ID) -> Node | None:
        principal = await info.context.principal()
        parsed = parse_id(id)
        if parsed is None:
            return None
        kind, value = parsed
        db = info.context.db
        try:
            if kind is Kind.CONVERSATION:
                from threadline.conversations import service

                return Conversation.from_row(await service.get(db, principal, value))
            if kind is Kind.MESSAGE:
                row = await thread_service.readable_message(db, principal, value)
                (path,) = await thread_service.path_ids(db, principal.tenant_id, [row])
                return Message.from_row(row, path)
            if kind is Kind.THREAD:
                await thread_service.readable_message(db, principal, value)
                thread = await threads.thread_with_root(db, principal.tenant_id, value, principal.user_id)
                return Thread.from_row(thread) if thread else None
            if kind is Kind.RUN:
                from threadline.runs import service as runs

                return Run.from_row(await runs.readable_run(db, principal, value))
            if kind is Kind.RUN_STEP:
                from threadline.runs import repository as run_steps
                from threadline.runs import service as runs

                step = await run_steps.step(db, principal.tenant_id, value)
                if step is None:
                    return None
                await runs.readable_run(db, principal, step["run_id"])
                return RunStep.from_row(step)
            if kind is Kind.USER:
                user = await users.user_by_id(db, principal.tenant_id, value)
                return User.from_row(user) if user else None
            if kind is Kind.PARTICIPANT:
                from threadline.conversations import service as conversations
                from threadline.conversations.types import Participant

                return Participant.from_row(await conversations.readable_participant(db, principal, value))
            if kind is Kind.INVITE:
                from threadline.conversations import service as conversations
                from threadline.conversations.types import Invite

                return Invite.from_row(await conversations.readable_invite(db, principal, value))
            if kind is Kind.API_KEY:
                from threadline.auth import service as auth
                from threadline.auth.types import ApiKey

                return ApiKey.from_row(await auth.readable_api_key(db, principal, value))
            if kind is Kind.RATE_LIMIT_PROFILE:
                from threadline.ratelimits import service as ratelimits
                from threadline.ratelimits.types import RateLimitProfile

                return RateLimitProfile.from_row(await ratelimits.readable_profile(db, principal, value))
        except ThreadlineError:
            return None
        return None


@strawberry.type
class ErrorCodeQuery:
    @strawberry.field(description="Every error code the API can send in `extensions.code`.")
    def error_codes(self) -> list[ErrorCodeEnum]:  # type: ignore[valid-type]
        return list(ErrorCodeEnum)


Query = merge_types("Query", (NodeQuery, RunQuery, AuthQuery, AuditQuery, PortingQuery, ConversationQuery, ThreadQuery, ErrorCodeQuery, StreamQuery, SearchQuery, RateLimitQuery))
Mutation = merge_types("Mutation", (AuthMutation, RunMutation, PortingMutation, ConversationMutation, ThreadMutation, PresenceMutation, SearchMutation, RateLimitMutation))
Subscription = merge_types("Subscription", (StreamSubscription,))


def build_schema(fast_execution: bool = True) -> strawberry.Schema:
    """The served schema; `fast_execution=False` gives the stock executor (tests and benchmarks compare)."""
    return ThreadlineSchema(
        query=Query,
        mutation=Mutation,
        subscription=Subscription,
        types=[Conversation, Message, Thread, User, *EVENT_TYPES],
        extensions=[OperationMetrics, ErrorCodes, SqlStatementCount, query_limits({"Query.tags": TAGS_LIMIT_MAX}), RateLimits, OutputBudgets, IdempotencyKeys],
        execution_context_class=FanoutExecutionContext if fast_execution else None,
        scalar_overrides=SCALAR_OVERRIDES,
    )


schema = build_schema()


def printed_schema() -> str:
    return str(schema.as_str()) + "\n"
