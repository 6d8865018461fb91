"""GraphQL types of forks: the mode. (A conversation's provenance, `ForkedFrom`, lives with `Conversation`.)"""

from __future__ import annotations

from enum import StrEnum

import strawberry

from threadline.graphql.describe import describe_values


@strawberry.enum(description="What `conversationFork` copies around the message it is given.")
class ConversationForkMode(StrEnum):
    BRANCH = "BRANCH"
    PATH_ONLY = "PATH_ONLY"
    THREAD = "THREAD"


describe_values(
    ConversationForkMode,
    {
        "BRANCH": "The path from the thread's root to the message, and every reply under the message.",
        "PATH_ONLY": "The path from the thread's root to the message, nothing under it: the conversation as the "
        "viewer of that branch sees it.",
        "THREAD": "The message's whole thread, every branch.",
    },
)
