"""GraphQL types of the storage tiers."""

from __future__ import annotations

import strawberry

from threadline.tiers.service import Storage


@strawberry.type(description="The tenant's storage tier policy.")
class TierPolicy:
    cold_after_days: int | None = strawberry.field(
        description="Conversations archived, or without activity, for longer than this many days move into a "
        "compressed cold document (read back transparently on their next read or write); null: none does."
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
