"""Tag rules: counts over readable conversations, atomic batch tagging, archiving by age."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import asyncpg

from threadline.auth.principal import Principal
from threadline.conversations import repository as conversation_repo
from threadline.conversations.access import Access, access_level
from threadline.conversations.rules import normalise_tags
from threadline.db import Database
from threadline.errors import bad_input, forbidden, not_found
from threadline.search import tag_repository as repo
from threadline.search.service import planned
from threadline.settings import Settings

TAGS_LIMIT_DEFAULT = 100
TAGS_LIMIT_MAX = 1000
ARCHIVE_BATCH = 500
ARCHIVE_MAX_DAYS = 36_500


async def tag_counts(db: Database, principal: Principal, limit: int) -> list[asyncpg.Record]:
    async with planned(db) as tx:
        return await repo.tag_counts(tx, principal, limit)


async def batch_tag(
    db: Database,
    settings: Settings,
    principal: Principal,
    ids: list[uuid.UUID],
    add: list[str],
    remove: list[str],
) -> list[asyncpg.Record]:
    """Add and remove tags on every conversation, or on none: NOT_FOUND if any is unreadable,
    FORBIDDEN if the caller may not manage one, BAD_USER_INPUT if one would exceed the tag limit."""
    ids = list(dict.fromkeys(ids))
    if not ids:
        raise bad_input("Give at least one conversation id", argument="ids")
    if len(ids) > settings.page_size_max:
        raise bad_input(
            f"At most {settings.page_size_max} conversations per batch (got {len(ids)})",
            argument="ids",
            limit=settings.page_size_max,
        )
    adding = normalise_tags(add, settings, argument="add")
    removing = set(normalise_tags(remove, settings, argument="remove"))
    if both := sorted(removing.intersection(adding)):
        raise bad_input(f"A tag cannot be both added and removed: {both}", argument="remove")
    async with db.transaction() as tx:
        rows = {
            r["id"]: r
            for r in await conversation_repo.conversations_with_access(
                tx, principal.tenant_id, ids, principal.user_id, lock=True
            )
        }
        levels = {cid: access_level(principal, rows[cid]) if cid in rows else Access.NONE for cid in ids}
        if any(level is Access.NONE for level in levels.values()):
            raise not_found("Conversation")
        if any(level < Access.MANAGE for level in levels.values()):
            raise forbidden("Only a conversation's owner (or a tenant admin) may change its tags")
        changes: list[tuple[uuid.UUID, list[str]]] = []
        for cid in ids:
            current = list(rows[cid]["tags"] or [])
            tags = [t for t in current if t not in removing] + [t for t in adding if t not in current]
            if len(tags) > settings.tags_max_count:
                raise bad_input(
                    f"A conversation may carry at most {settings.tags_max_count} tags", argument="add"
                )
            if tags != current:
                changes.append((cid, tags))
        if changes:
            for row in await repo.set_tags(tx, principal.tenant_id, changes):
                rows[row["id"]] = row
    return [rows[cid] for cid in ids]


async def archive_older_than(db: Database, principal: Principal, days: int) -> int:
    """Archive the tenant's ACTIVE conversations idle for `days` or more, in short transactions."""
    if not principal.is_admin:
        raise forbidden("Only a tenant admin may archive conversations in bulk")
    if not 1 <= days <= ARCHIVE_MAX_DAYS:
        raise bad_input(f"days must be between 1 and {ARCHIVE_MAX_DAYS}", argument="days")
    cutoff = datetime.now(UTC) - timedelta(days=days)
    total = 0
    while True:
        async with db.transaction() as tx:
            done = await repo.archive_batch(tx, principal.tenant_id, cutoff, ARCHIVE_BATCH)
        total += done
        if done < ARCHIVE_BATCH:
            return total
