"""GraphQL types of the storage tiers."""

from __future__ import annotations

from datetime import datetime
from enum import Enum

import strawberry

from threadline.graphql.describe import describe_values
from threadline.tiers.service import Storage


@strawberry.type(description="The tenant's storage tier policy.")
class TierPolicy:
    cold_after_days: int | None = strawberry.field(
        description="Conversations archived, or without activity, for longer than this many days move into a "
        "compressed cold document (read back transparently on their next read or write); null: none does."
    )
    deep_after_days: int | None = strawberry.field(
        default=None,
        description="Cold documents older than this many days move to deep storage (recompressed harder; back "
        "only through `conversationRestore`); null: none does.",
    )


@strawberry.type(
    description="What the cold tier holds and saves: the moved rows' size in the hot tables (without their "
    "indexes) against the size of their compressed documents. Byte counts are Floats (exact past 2^31)."
)
class TierStorage:
    conversations: int = strawberry.field(description="Conversations that are cold now.")
    rows: int = strawberry.field(
        description="Rows their documents hold (messages and everything hanging off them)."
    )
    hot_bytes: float = strawberry.field(description="Bytes those rows took in the hot tables.")
    cold_bytes: float = strawberry.field(description="Bytes their compressed documents take.")
    saved_bytes: float = strawberry.field(description="hotBytes - coldBytes.")

    @classmethod
    def of(cls, storage: Storage) -> TierStorage:
        return cls(
            conversations=storage.conversations,
            rows=storage.rows,
            hot_bytes=float(storage.hot_bytes),
            cold_bytes=float(storage.cold_bytes),
            saved_bytes=float(storage.saved_bytes),
        )


@strawberry.enum(description="Where a conversation's content is stored.")
class StorageTier(Enum):
    HOT = "HOT"
    COLD = "COLD"
    DEEP = "DEEP"


describe_values(
    StorageTier,
    {
        "HOT": "In the tables: read as usual.",
        "COLD": "In one compressed document (coldAfterDays); any read or write brings it back first.",
        "DEEP": "In deep storage (deepAfterDays, recompressed harder): content reads are CONFLICT until "
        "`conversationRestore` brings it back.",
    },
)


@strawberry.enum(description="State of a restore from deep storage.")
class TierRestoreState(Enum):
    RESTORING = "RESTORING"
    DONE = "DONE"
    FAILED = "FAILED"


describe_values(
    TierRestoreState,
    {
        "RESTORING": "Under way: rowsDone of rowsTotal are back (not visible to readers until DONE).",
        "DONE": "The content is back (the conversation is HOT).",
        "FAILED": "It stopped; nothing came back and the content is still in deep storage. Retry.",
    },
)


@strawberry.type(
    description="The latest restore of a conversation from deep storage (`conversationRestore`)."
)
class TierRestoreProgress:
    state: TierRestoreState = strawberry.field(description="RESTORING, DONE or FAILED.")
    rows_done: int = strawberry.field(description="Rows put back so far.")
    rows_total: int = strawberry.field(description="Rows in the document.")
    started_at: datetime = strawberry.field(description="When it started.")
    updated_at: datetime = strawberry.field(description="When it last reported.")


@strawberry.type(
    description="Where a conversation's content is stored, and its latest restore from deep storage."
)
class ConversationStorage:
    tier: StorageTier = strawberry.field(description="HOT, COLD or DEEP.")
    restore: TierRestoreProgress | None = strawberry.field(
        description="The latest restore from deep storage; null if there was none. Poll it while "
        "`conversationRestore` runs."
    )
