"""Event kinds: dotted names, as clients see them in `type`.

Each kind has one typed payload (events.payloads, mapped by KIND_OF) and one `publish_*` (events.announce)."""

from enum import StrEnum


class EventType(StrEnum):
    THREAD_NEW = "thread.new"
    THREAD_ACTIVITY = "thread.activity"
    MESSAGE_DELTA = "message.delta"
    MESSAGE_DONE = "message.done"
    PRESENCE_UPDATE = "presence.update"
    TYPING_UPDATE = "typing.update"
    UNREAD_UPDATE = "unread.update"
    MEMBERSHIP_CHANGED = "membership.changed"
    BRANCH_SIBLING = "branch.sibling"
    BRANCH_CURRENT = "branch.current"
    CONVERSATION_FORKED = "conversation.forked"
    MESSAGE_FEEDBACK = "message.feedback"
    RUN_STATUS = "run.status"
    ENRICHMENT_JOB = "enrichment.job"
    # Internal: a user's credentials or role changed (auth.live); routed to sockets, never to subscriptions.
    PRINCIPAL_CHANGED = "principal.changed"
    ERROR = "error"
