"""Enrichment rules for callers: who may queue a job again, and when."""

from __future__ import annotations

import uuid

import asyncpg

from threadline.auth.principal import Principal
from threadline.conversations.access import Access, require, require_writable
from threadline.db import Database
from threadline.enrich import repository as repo
from threadline.enrich.jobs import announce
from threadline.errors import conflict

KINDS = ("TITLE", "SUMMARY", "TAGS")


async def retry(db: Database, principal: Principal, conversation_id: uuid.UUID, kind: str) -> asyncpg.Record:
    """Queue a conversation's job now, whatever it did before: a failed one tries again, a finished one makes
    its result again. Needs write access to an ACTIVE conversation. A title the user set is never replaced:
    retrying TITLE then is CONFLICT; a generated title may be made again."""
    async with db.transaction() as tx:
        conversation = await require(tx, principal, conversation_id, Access.WRITE, lock=True)
        require_writable(conversation)
        current = await repo.job(tx, principal.tenant_id, conversation_id, kind, lock=True)
        if current is not None and current["status"] in ("QUEUED", "RUNNING"):
            raise conflict(f"The {kind} job is already {current['status'].lower()}")
        if kind == "TITLE":
            source = await repo.title_source(tx, principal.tenant_id, conversation_id)
            if source == "USER":
                raise conflict("The title was set by a user; it is never replaced by a generated one")
            if source == "GENERATED":
                await repo.reopen_title(tx, principal.tenant_id, conversation_id)
        row = await repo.queue(tx, principal.tenant_id, conversation_id, kind)
        await repo.watch_next_message(tx, principal.tenant_id, conversation_id)
        await announce(tx, row, "QUEUED")
        return row
