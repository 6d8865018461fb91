"""The `clientMutationId` argument every creating mutation takes."""

from __future__ import annotations

from typing import Annotated

import strawberry

from threadline.idempotency.service import KEY_MAX_CHARS

ClientMutationId = Annotated[
    str | None,
    strawberry.argument(
        description=f"An idempotency key (1 to {KEY_MAX_CHARS} printable characters, unique per request you mean), "
        "kept per user for THREADLINE_IDEMPOTENCY_TTL_SECONDS (24 hours by default): a retry with the same key "
        "creates nothing and returns what the first call created (the same ids, as the objects are now), also "
        "while the first call is still running; the same key with other arguments is CONFLICT. Over HTTP the "
        "`Idempotency-Key` header does the same for a request with one mutation field."
    ),
]
