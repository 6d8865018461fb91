"""GraphQL types of PII detection and the tenant's PII policy."""

from __future__ import annotations

from typing import Any

import strawberry

from threadline.graphql.describe import describe_values
from threadline.privacy import detectors, policy

PiiKind = strawberry.enum(detectors.PiiKind, description="What a PII detection found.")
describe_values(
    PiiKind,
    {
        "EMAIL": "An email address.",
        "PHONE": "A phone number (international, or national with the usual grouping, or after 'phone:').",
        "CARD": "A payment card number (a known issuer's prefix and length, Luhn checksum valid).",
        "IBAN": "An international bank account number (the country's length, mod-97 check digits valid).",
        "IP_ADDRESS": "An IPv4 or IPv6 address (not a version number).",
        "SECRET": "An API key, token, password or private key: a known provider prefix, or a random-looking "
        "string after a word such as token, key or password.",
    },
)

PiiPolicy = strawberry.enum(policy.PiiPolicy, description="How a tenant treats PII in message content.")
describe_values(
    PiiPolicy,
    {
        "OFF": "Nothing is scanned; `Message.pii` is null.",
        "DETECT": "Content is stored as written; detections are stored and shown in `Message.pii`.",
        "MASK_ON_WRITE": "Each detection is replaced by a placeholder such as [EMAIL] before anything is stored "
        "(messages, edits, imports, the event log, search): the original is never kept.",
        "MASK_ON_READ": "Content is stored as written; everyone but its author and the tenant's admins reads it "
        "masked, on every read path (messages, trees, search, exports, share pages, subscriptions).",
    },
)


@strawberry.type(description="Where a detection is: character offsets in the content as returned.")
class PiiSpan:
    start: int = strawberry.field(description="Offset of the first character, from 0 (Unicode code points).")
    end: int = strawberry.field(description="Offset just past the last character.")


@strawberry.type(description="One piece of PII found in a message's content.")
class PiiDetection:
    kind: PiiKind = strawberry.field(description="What was found.")  # type: ignore[valid-type]
    span: PiiSpan = strawberry.field(
        description="Where, in `Message.content` as this caller reads it (for a masked reader: the placeholder)."
    )

    @classmethod
    def of(cls, stored: dict[str, Any]) -> PiiDetection:
        return cls(
            kind=detectors.PiiKind(stored["kind"]), span=PiiSpan(start=stored["start"], end=stored["end"])
        )


@strawberry.type(description="What `userAnonymise` did.")
class UserAnonymisation:
    user_id: strawberry.ID = strawberry.field(
        description="The anonymised user's former id (it no longer exists)."
    )
    pseudonym_id: strawberry.ID = strawberry.field(
        description="The user who now stands for them: authorship, ownership and memberships name this id."
    )
    messages: int = strawberry.field(description="Messages they had written (all kept).")
    messages_masked: int = strawberry.field(description="Of those, how many held PII, now masked.")
    detections: int = strawberry.field(description="How many pieces of PII were masked in their messages.")
