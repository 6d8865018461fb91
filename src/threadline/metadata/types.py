"""GraphQL input of metadata filters (`conversations(metadata:)`, `search(metadata:)`)."""

from __future__ import annotations

import strawberry


@strawberry.input(description="A metadata entry to match: the key must be present with exactly this value.")
class MetadataFilterInput:
    key: str = strawberry.field(description="The metadata key (1 to 64 characters).")
    value: str = strawberry.field(description="Its value, compared exactly (at most 512 characters).")
