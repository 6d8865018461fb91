"""Composes the domain schemas into one strawberry.Schema."""

from __future__ import annotations

from typing import Annotated

import strawberry
from strawberry.tools import merge_types

from threadline.audit.schema import AuditMutation, AuditQuery
from threadline.auth.schema import AuthMutation, AuthQuery, UserErasureMutation
from threadline.auth.types import User
from threadline.conversations.schema import ConversationBulkMutation, ConversationMutation, ConversationQuery
from threadline.conversations.types import Conversation
from threadline.embeddings.schema import EmbeddingQuery
from threadline.embeddings.service import SIMILAR_FIRST_MAX
from threadline.enrich.schema import EnrichmentMutation
from threadline.feedback.schema import FeedbackMutation
from threadline.forks.schema import ForkMutation
from threadline.graphql.base_schema import ThreadlineSchema
from threadline.graphql.budget import OutputBudgets
from threadline.graphql.context import Info
from threadline.graphql.describe import describe_type
from threadline.graphql.errors import ErrorCodeEnum, ErrorCodes, SqlStatementCount
from threadline.graphql.fast_execution import StockExecutionContext
from threadline.graphql.limits import query_limits
from threadline.graphql.node import Node, resolve_node
from threadline.graphql.persisted import PersistedDocuments
from threadline.graphql.scalars import SCALAR_OVERRIDES
from threadline.idempotency.schema import IdempotencyKeys
from threadline.links.schema import LinkMutation
from threadline.metadata.schema import MetadataMutation
from threadline.observability.schema import OperationMetrics
from threadline.organise.schema import OrganiseMutation, OrganiseQuery
from threadline.porting.schema import PortingMutation, PortingQuery, RetentionMutation
from threadline.presence.schema import PresenceMutation
from threadline.privacy.schema import PrivacyMutation, PrivacyQuery
from threadline.ratelimits.schema import RateLimitMutation, RateLimitQuery, RateLimits
from threadline.runs.schema import RunMutation, RunQuery
from threadline.search.schema import SearchMutation, SearchQuery
from threadline.search.tag_service import TAGS_LIMIT_MAX
from threadline.sharing.schema import ShareMutation, ShareQuery
from threadline.streaming.fanout import FanoutExecutionContext
from threadline.streaming.schema import StreamQuery, StreamSubscription
from threadline.streaming.types import EVENT_TYPES
from threadline.threads.schema import MessageStreamMutation, ThreadMutation, ThreadQuery
from threadline.threads.types import Message, Thread
from threadline.tiers.schema import TierMutation, TierQuery


@strawberry.type
class NodeQuery:
    @strawberry.field(
        description="Any object by its global id, or null if it does not exist or is not visible."
    )
    async def node(
        self,
        info: Info,
        id: Annotated[
            strawberry.ID, strawberry.argument(description="Any object's global id (the `id` of a Node).")
        ],
    ) -> Node | None:
        # Each domain's schema.py registers its kinds (graphql/node.py).
        return await resolve_node(info, id)


@strawberry.type
class ErrorCodeQuery:
    @strawberry.field(description="Every error code the API can send in `extensions.code`.")
    def error_codes(self) -> list[ErrorCodeEnum]:  # type: ignore[valid-type]
        return list(ErrorCodeEnum)


Query = merge_types(
    "Query",
    (
        NodeQuery,
        RunQuery,
        AuthQuery,
        AuditQuery,
        PortingQuery,
        ConversationQuery,
        ThreadQuery,
        ErrorCodeQuery,
        StreamQuery,
        SearchQuery,
        EmbeddingQuery,
        RateLimitQuery,
        ShareQuery,
        OrganiseQuery,
        PrivacyQuery,
        TierQuery,
    ),
)
# The order of the classes is the printed order of the fields (schema.graphql is checked in and diffed): a
# domain whose fields sit between other domains' ones (message streaming, erasure, bulk changes) exports
# them as a class of their own that keeps their place.
Mutation = merge_types(
    "Mutation",
    (
        AuthMutation,
        RunMutation,
        MessageStreamMutation,
        PortingMutation,
        UserErasureMutation,
        RetentionMutation,
        ConversationMutation,
        ForkMutation,
        ThreadMutation,
        MetadataMutation,
        FeedbackMutation,
        PresenceMutation,
        ConversationBulkMutation,
        SearchMutation,
        RateLimitMutation,
        ShareMutation,
        OrganiseMutation,
        LinkMutation,
        EnrichmentMutation,
        PrivacyMutation,
        AuditMutation,
        TierMutation,
    ),
)
Subscription = merge_types("Subscription", (StreamSubscription,))
describe_type(
    Query,
    "Reads. Every field needs credentials (`Authorization: Bearer <API key or JWT>`) and sees only the caller's tenant, "
    "except `sharedConversation` (a share link's token is its credential) and the schema itself.",
)
describe_type(
    Mutation,
    "Writes. Mutations that create accept a `clientMutationId` (idempotency key) so a retry after an ambiguous "
    "failure does not create twice.",
)
describe_type(
    Subscription,
    "Live event streams; after a disconnect, resubscribe with `since` (the last event's `cursor`) to miss nothing.",
)


def build_schema(fast_execution: bool = True) -> strawberry.Schema:
    """The served schema; `fast_execution=False` gives the stock executor (tests and benchmarks compare)."""
    return ThreadlineSchema(
        query=Query,
        mutation=Mutation,
        subscription=Subscription,
        types=[Conversation, Message, Thread, User, *EVENT_TYPES],
        extensions=[
            PersistedDocuments,
            OperationMetrics,
            ErrorCodes,
            SqlStatementCount,
            query_limits(
                {
                    "Query.tags": TAGS_LIMIT_MAX,
                    "Conversation.similar": SIMILAR_FIRST_MAX,
                    "Message.similar": SIMILAR_FIRST_MAX,
                }
            ),
            RateLimits,
            OutputBudgets,
            IdempotencyKeys,
        ],
        execution_context_class=FanoutExecutionContext if fast_execution else StockExecutionContext,
        scalar_overrides=SCALAR_OVERRIDES,
    )


schema = build_schema()


def printed_schema() -> str:
    return str(schema.as_str()) + "\n"
