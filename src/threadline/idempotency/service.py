"""Running a creating mutation once per idempotency key.

The key is claimed, the write runs and the created ids are recorded in one transaction, so a crash can
neither keep a key without its write nor a write without its key. A retry with the key gets the ids of
the first result (the resolver reads the objects as they are now); a concurrent retry waits for the first
attempt's transaction, then does the same. A key used with other arguments is CONFLICT. Keys are per
user and kept `idempotency_ttl_seconds`; only ids are stored, never content.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import orjson

from threadline.auth.principal import Principal
from threadline.db import Database
from threadline.db.within import WithinTransaction
from threadline.errors import ErrorCode, ThreadlineError, bad_input
from threadline.idempotency import repository as repo
from threadline.settings import Settings

log = logging.getLogger("threadline.idempotency")

KEY_MAX_CHARS = 200
# Root fields of one request that may carry a key: each claims a key in its own transaction.
KEYS_PER_REQUEST_MAX = 20
PURGE_BATCH = 1000

R = TypeVar("R")


@dataclass(frozen=True)
class Outcome(Generic[R]):
    """What the write returned (`value`) and the ids it created; for a retry (`replayed`), no value and the
    ids the first attempt created."""

    value: R | None
    ids: list[uuid.UUID]
    replayed: bool = False


def validate_key(key: str, argument: str) -> str:
    if not 1 <= len(key) <= KEY_MAX_CHARS or not key.isprintable():
        raise bad_input(
            f"An idempotency key is 1 to {KEY_MAX_CHARS} printable characters",
            argument=argument,
            limit=KEY_MAX_CHARS,
        )
    return key


def _plain(value: Any) -> Any:
    # Values orjson does not encode itself (strawberry's UNSET, ...): an absent value is null.
    return None if type(value).__name__ == "UnsetType" else str(value)


def request_digest(operation: str, arguments: Mapping[str, Any]) -> str:
    """The request a key stands for: the operation and its arguments (inputs are dataclasses), not the key."""
    encoded = orjson.dumps([operation, arguments], default=_plain, option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(encoded).hexdigest()


def key_reused() -> ThreadlineError:
    return ThreadlineError(
        ErrorCode.CONFLICT,
        "This idempotency key was already used for a different request (another operation or other arguments); "
        "use a new key for a new request",
        argument="clientMutationId",
    )


async def once(
    db: Database,
    settings: Settings,
    principal: Principal,
    key: str | None,
    operation: str,
    arguments: Mapping[str, Any],
    write: Callable[[Database], Awaitable[R]],
    ids_of: Callable[[R], list[uuid.UUID]],
) -> Outcome[R]:
    """Runs `write` (without a key: as is), or returns the ids an earlier request with `key` created."""
    if key is None:
        return Outcome(await write(db), [])
    digest = request_digest(operation, arguments)
    tenant, user = principal.tenant_id, principal.user_id
    for _ in range(3):
        async with db.transaction() as tx:
            if await repo.claim(tx, tenant, user, key, operation, digest, settings.idempotency_ttl_seconds):
                value = await write(WithinTransaction(db, tx))
                ids = ids_of(value)
                await repo.record_result(tx, tenant, user, key, ids)
                return Outcome(value, ids)
            first = await repo.earlier(tx, tenant, user, key)
        if first is None:
            continue  # it expired (and was purged) between the two statements: claim it again
        if first["request_hash"] != digest:
            raise key_reused()
        return Outcome(None, [uuid.UUID(i) for i in first["result"]], replayed=True)
    raise ThreadlineError(ErrorCode.CONFLICT, "The idempotency key changed hands meanwhile; retry")


async def purge_expired(db: Database) -> int:
    """Deletes every expired key, in batches; returns how many."""
    total = 0
    while True:
        deleted = await repo.purge_expired(db, PURGE_BATCH)
        total += deleted
        if deleted < PURGE_BATCH:
            return total
