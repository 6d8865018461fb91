"""Share links: made by whoever manages a conversation, read by anyone holding the token.

A link names the whole conversation or one branch (the path from its root down to a message), as it was when
shared (later messages stay hidden) or live. The token is 256 random bits shown once; only its SHA-256 is kept,
so a reader's token is found by hashing it and looking the hash up: guessed, expired and revoked tokens take the
same statements and all answer NOT_FOUND. What a reader gets is the messages' text and roles: no participants,
no emails, no other threads. Edits and deletions after sharing show through (deleted means gone: a link never
keeps a copy of what was taken back).
"""

from __future__ import annotations

import hashlib
import hmac
import math
import secrets
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from threadline.audit import reads
from threadline.audit.service import AuditAction, SystemActor, record
from threadline.auth.principal import Principal, Role
from threadline.conversations import access_rule
from threadline.conversations.access import Access, require
from threadline.db import Database, Executor
from threadline.errors import ErrorCode, ThreadlineError, bad_input, not_found
from threadline.ids import Kind, encode_id
from threadline.privacy.reading import anonymous_reader
from threadline.privacy.repository import tenant_policy
from threadline.ratelimits.service import Budget, RateLimited
from threadline.settings import Settings
from threadline.sharing import repository as repo
from threadline.threads import repository as messages
from threadline.threads.paths import ancestor_paths

TOKEN_BYTES = 32
# What the reader sees for a token that names nothing they may read, whatever the reason.
NOT_SHARED = "Shared conversation"
# A far future expiry is a typo more often than a wish (and datetime arithmetic ends at year 9999).
EXPIRY_MAX = timedelta(days=3660)


def token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


def new_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


@dataclass(frozen=True)
class Created:
    link: asyncpg.Record
    token: str


@dataclass(frozen=True)
class Shared:
    """An open link, as its reader sees it."""

    link: asyncpg.Record
    title: str
    branch: repo.Branch | None


async def create(
    db: Database,
    principal: Principal,
    conversation_id: uuid.UUID,
    message_id: uuid.UUID | None,
    expires_at: datetime | None,
    live: bool,
) -> Created:
    """A new link; only who manages the conversation (its owner, a tenant admin) may publish it."""
    if expires_at is not None:
        if expires_at.tzinfo is None:
            raise bad_input("`expiresAt` needs a time zone", argument="expiresAt")
        now = datetime.now(UTC)
        if expires_at <= now:
            raise bad_input("`expiresAt` must be in the future", argument="expiresAt")
        if expires_at > now + EXPIRY_MAX:
            raise bad_input("`expiresAt` is limited to ten years from now", argument="expiresAt")
    async with db.transaction() as tx:
        # Locked: writers draw message seqs under this lock, so every message of the snapshot has committed and
        # every later one gets a higher seq (snapshot_seq is exact, not a race with a slow writer).
        conversation = await require(tx, principal, conversation_id, Access.MANAGE, lock=True)
        if conversation["status"] == "DELETED":
            raise not_found("Conversation")
        if message_id is not None:
            message = await messages.message(tx, principal.tenant_id, message_id)
            if message is None or message["conversation_id"] != conversation_id or message["deleted_at"]:
                raise not_found("Message")
        token = new_token()
        row = await repo.insert_link(
            tx,
            principal.tenant_id,
            conversation_id=conversation_id,
            message_id=message_id,
            created_by=principal.user_id,
            token_hash=token_hash(token),
            live=live,
            snapshot_seq=await repo.last_seq(tx, principal.tenant_id, conversation_id),
            expires_at=expires_at,
        )
        # Publishing content to anyone holding a link is worth a line in the tenant's audit log.
        await record(
            tx, principal, AuditAction.SHARE_LINK_CREATE, (Kind.CONVERSATION, conversation_id), _details(row)
        )
    return Created(row, token)


def _details(row: asyncpg.Record) -> dict[str, object]:
    return {
        "shareLinkId": encode_id(Kind.SHARE_LINK, row["id"]),
        "messageId": encode_id(Kind.MESSAGE, row["message_id"]) if row["message_id"] else None,
        "live": row["live"],
        "expiresAt": row["expires_at"].isoformat() if row["expires_at"] else None,
    }


async def readable_link(db: Executor, principal: Principal, link_id: uuid.UUID) -> asyncpg.Record:
    """A link its maker, or whoever manages its conversation, may see and revoke; NOT_FOUND for others."""
    row = await repo.link(db, principal.tenant_id, link_id)
    if row is None:
        raise not_found("ShareLink")
    if row["created_by"] != principal.user_id:
        try:
            await require(db, principal, row["conversation_id"], Access.MANAGE)
        except ThreadlineError as exc:
            if exc.code not in (ErrorCode.NOT_FOUND, ErrorCode.FORBIDDEN):
                raise  # a database outage is UNAVAILABLE, not a missing link
            raise not_found("ShareLink") from exc
    return row


async def revoke(db: Database, principal: Principal, link_id: uuid.UUID) -> asyncpg.Record:
    async with db.transaction() as tx:
        await readable_link(tx, principal, link_id)
        row = await repo.revoke(tx, principal.tenant_id, link_id)
        if row is None:
            raise not_found("ShareLink")
        await record(
            tx,
            principal,
            AuditAction.SHARE_LINK_REVOKE,
            (Kind.CONVERSATION, row["conversation_id"]),
            _details(row),
        )
    return row


def window_start(now: float, seconds: int) -> datetime:
    start = math.floor(now / seconds) * seconds
    return datetime.fromtimestamp(start, UTC)


async def check_rate(db: Executor, settings: Settings, digest: bytes, address: str) -> None:
    """One read counted against the client address's window, then the token's; RATE_LIMITED (retryAfter: the
    rest of the window) past either budget. Counted for every token, valid or not: guessing costs the same. A
    client past its address's budget is refused before its token is counted: each guessed token is a window row
    of its own (kept a day), which a refused client must not go on adding, one per alias of every request."""
    seconds = max(settings.share_rate_window_seconds, 1)
    now = time.time()
    start = window_start(now, seconds)
    for name, key, limit in (
        ("shareReadsPerAddress", "a:" + address, settings.share_reads_per_address),
        ("shareReadsPerToken", "t:" + digest.hex(), settings.share_reads_per_token),
    ):
        (hits,) = await repo.hit_windows(db, [key], start)
        if hits > limit:
            retry_after = max(math.ceil(start.timestamp() + seconds - now), 1)
            raise RateLimited(Budget(name, limit, 0, retry_after), retry_after)


# Read windows older than this are forgotten by the retention job (porting.retention), not on the read path: a
# read always costs the same statements.
WINDOWS_KEPT = timedelta(days=1)


async def forget_old_windows(db: Executor) -> None:
    await repo.drop_windows_before(db, datetime.now(UTC) - WINDOWS_KEPT)


async def open_link(db: Executor, settings: Settings, token: str, address: str, *, count: bool) -> Shared:
    """The link `token` names, if it is open: NOT_FOUND for an unknown, revoked or expired token or a deleted
    conversation, after the same statements in every case. `count` counts a view."""
    digest = token_hash(token)
    await check_rate(db, settings, digest, address)
    row = await repo.link_by_token_hash(db, digest)
    stored = bytes(row["token_hash"]) if row is not None else b"\0" * len(digest)
    matches = hmac.compare_digest(stored, digest)
    open_ = (
        row is not None
        and matches
        and row["revoked_at"] is None
        and (row["expires_at"] is None or row["expires_at"] > row["read_at"])
        and row["status"] != "DELETED"
        and (row["message_id"] is None or row["message_root_id"] is not None)
        and _maker_may_read(row)
    )
    if not open_ or row is None:
        raise not_found(NOT_SHARED)
    branch = None
    if row["message_id"] is not None:
        path = bytes(row["message_path"])
        branch = (row["message_root_id"], [*ancestor_paths(path), path], path if row["live"] else None)
    if count:
        await repo.count_view(db, row["tenant_id"], row["id"])
        # A view by whoever holds the link: audited like a non-participant's read (audit.reads).
        details = {"shareLinkId": encode_id(Kind.SHARE_LINK, row["id"])}
        await reads.record_read(
            db, SystemActor(row["tenant_id"]), row["conversation_id"], "SHARE_LINK", details
        )
    return Shared(row, row["title"], branch)


def _maker_may_read(row: asyncpg.Record) -> bool:
    """A link publishes what its maker may read, no more and no longer: once they may not read the
    conversation (removed from it, moved to another team, erased), their links answer NOT_FOUND like revoked
    ones, and open again if their access comes back (a link is not revoked by it). Other managers revoke a
    link themselves."""
    if row["maker_role"] is None:
        return False
    maker = Principal(row["tenant_id"], row["created_by"], Role(row["maker_role"]), row["maker_team"])
    level = access_rule.access_level(
        maker, row["tenant_id"], row["maker_participant_role"], row["owner_team"]
    )
    return level >= Access.READ


async def messages_page(db: Executor, shared: Shared, after_seq: int, limit: int) -> list[Any]:
    """`limit` messages of the share after `after_seq` (fetch one more to know whether more follow); masked
    under the tenant's MASK_ON_READ (a link's reader is nobody: privacy.reading)."""
    link = shared.link
    rows = await repo.shared_messages(
        db,
        link["tenant_id"],
        conversation_id=link["conversation_id"],
        snapshot_seq=None if link["live"] else link["snapshot_seq"],
        branch=shared.branch,
        after_seq=after_seq,
        limit=limit,
    )
    reader = anonymous_reader(await tenant_policy(db, link["tenant_id"]))
    if reader is None:
        return rows
    return [{**row, "content": reader.content(None, row["content"])} for row in rows]


async def count_messages(db: Executor, shared: Shared) -> int:
    link = shared.link
    return await repo.count_shared_messages(
        db,
        link["tenant_id"],
        conversation_id=link["conversation_id"],
        snapshot_seq=None if link["live"] else link["snapshot_seq"],
        branch=shared.branch,
    )
