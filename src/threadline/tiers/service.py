"""Moving a conversation's content into its cold document and back.

Freezing happens in the background pass (`tiers.job`), one conversation per transaction under its row
lock. Restoring happens wherever a read or write arrives at a cold conversation: `conversations.access.
require` (the entry point of every conversation read and write), a message or run looked up by id, and
before erasure or a data-access export of a user the document names. It runs inside the caller's open
transaction when there is one (so the caller's next statement sees the rows, and a caller that holds the
conversation's lock cannot deadlock with it), else in its own. The document row's lock serialises
concurrent restorers: the first puts the rows back and clears the document, the others then find no
document and do nothing.
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson

from threadline import crypto
from threadline.auth.principal import Principal
from threadline.db import Database, Executor
from threadline.errors import bad_input, conflict, forbidden
from threadline.tiers import document as cold
from threadline.tiers import document_repository as plans
from threadline.tiers import repository as repo

log = logging.getLogger("threadline.tiers")


@dataclass(frozen=True)
class Frozen:
    conversation_id: uuid.UUID
    rows: int
    hot_bytes: int
    cold_bytes: int


async def freeze(
    tx: Executor, plan: plans.Plan, tenant_id: uuid.UUID, conversation_id: uuid.UUID
) -> Frozen | None:
    """Move the conversation's content into one compressed document, inside `tx`, whose caller holds the
    conversation row's lock. None (nothing moved) when something must keep it hot."""
    if await repo.blocked(tx, tenant_id, conversation_id, plan.blocked_sql):
        return None
    parts: list[cold.TableRows] = []
    rows = hot_bytes = 0
    message_ids: list[uuid.UUID] = []
    run_ids: list[uuid.UUID] = []
    users: set[uuid.UUID] = set()
    for table in plan.tables:
        if table.derived:
            continue
        dumped = await repo.dump_rows(tx, tenant_id, conversation_id, table.dump_sql(), table.excluded)
        if not dumped["rows"]:
            continue
        rows += dumped["rows"]
        hot_bytes += dumped["bytes"]
        text: str = dumped["json"]
        parts.append(cold.TableRows(table.name, table.columns, dumped["rows"], text.encode()))
        names = plan.user_columns.get(table.name, [])
        indirect = [i for i in plan.indirect_users if i[0] == table.name]
        if table.name in ("message", "run") or names or indirect:
            loaded: list[dict[str, Any]] = orjson.loads(text)
            if table.name == "message":
                message_ids = [uuid.UUID(r["id"]) for r in loaded]
            elif table.name == "run":
                run_ids = [uuid.UUID(r["id"]) for r in loaded]
            users.update(uuid.UUID(r[c]) for r in loaded for c in names if r.get(c))
            for _, column, ref, ref_column, user_column in indirect:
                keys = sorted({r[column] for r in loaded if r.get(column)})
                if keys:
                    found = await repo.uploaders(tx, tenant_id, ref, user_column, ref_column, keys)
                    users.update(u for u in found if isinstance(u, uuid.UUID))
    if not rows:
        return None
    document = cold.encode(parts)
    await repo.set_tier_move(tx, True)
    for table in reversed(plan.tables):
        await repo.delete_rows(tx, tenant_id, conversation_id, table.delete_sql())
    await repo.set_tier_move(tx, False)
    await repo.store_document(
        tx,
        tenant_id,
        conversation_id,
        document=document,
        codec=cold.CODEC,
        hot_bytes=hot_bytes,
        row_count=rows,
        message_ids=message_ids,
        run_ids=run_ids,
        user_ids=sorted(users),
    )
    return Frozen(conversation_id, rows, hot_bytes, len(document))


DEEP_MESSAGE = "The conversation is in deep storage: conversationRestore brings it back"
PROGRESS_BATCH = 2000  # rows per insert, and per progress step, of an explicit restore from deep storage

Progress = Callable[[str, int, int], Awaitable[None]]


async def restore(
    db: Executor, tenant_id: uuid.UUID, conversation_id: uuid.UUID, *, explicit: bool = False
) -> bool:
    """Put a cold conversation's rows back; False when it was not cold (or another restorer was first).

    A conversation in deep storage comes back only when `explicit` (conversationRestore, erasure, exports,
    operators); otherwise CONFLICT. With the pool as `db`, an explicit restore records its progress in
    `tier_restore` outside its transaction, so `Conversation.storage` shows it while it runs."""
    if isinstance(db, Database):
        pool = db
        reported: list[int] = []  # the total, once a restore from deep storage started reporting

        async def progress(state: str, done: int, total: int) -> None:
            reported[:] = [total]
            await repo.record_progress(pool, tenant_id, conversation_id, state, done, total)

        try:
            async with db.transaction() as tx:
                restored = await _restore(tx, tenant_id, conversation_id, explicit, progress)
        except Exception:
            if reported:
                with contextlib.suppress(Exception):
                    await repo.record_progress(pool, tenant_id, conversation_id, "FAILED", 0, reported[0])
            raise
        if reported:  # after the commit: DONE means the rows are there
            await repo.record_progress(pool, tenant_id, conversation_id, "DONE", reported[0], reported[0])
        return restored
    return await _restore(db, tenant_id, conversation_id, explicit, None)


async def _restore(
    tx: Executor, tenant_id: uuid.UUID, conversation_id: uuid.UUID, explicit: bool, progress: Progress | None
) -> bool:
    held = await repo.take_document(tx, tenant_id, conversation_id)
    if held is None:
        return False
    if held["deep"] and not explicit:
        raise conflict(DEEP_MESSAGE)
    report = progress if held["deep"] else None
    started = time.perf_counter()
    stored = {t.name: t for t in cold.decode(bytes(held["document"]), held["codec"])}
    plan = await plans.read_plan(tx)
    unknown = set(stored) - {t.name for t in plan.tables if not t.derived}
    if unknown:  # a table renamed or dropped since: refuse rather than lose its rows (the document stays)
        raise RuntimeError(
            f"cold document of {conversation_id} holds rows of tables no longer moved: {unknown}"
        )
    total = sum(t.rows for t in stored.values())
    done = restored = 0
    if report is not None:
        await report("RESTORING", 0, total)
    for table in plan.tables:
        rows = stored.get(table.name)
        if rows is None or not rows.rows:
            continue
        sql = table.insert_sql(set(rows.columns))
        if report is None:
            restored += await repo.insert_rows(tx, sql, rows.json.decode())
            continue
        loaded = orjson.loads(rows.json)
        for at in range(0, len(loaded), PROGRESS_BATCH):
            batch = loaded[at : at + PROGRESS_BATCH]
            restored += await repo.insert_rows(tx, sql, orjson.dumps(batch).decode())
            done += len(batch)
            await report("RESTORING", done, total)
    if crypto.active() is not None:  # encryption at rest: sealed messages' vectors, from their plaintext
        await repo.index_sealed_messages(tx, tenant_id, conversation_id)
    await repo.mark_restored(tx, tenant_id, conversation_id)
    log.info(
        "restored conversation %s: %d rows in %.1f ms",
        conversation_id,
        restored,
        (time.perf_counter() - started) * 1000,
    )
    return True


async def restore_holding_message(db: Executor, tenant_id: uuid.UUID, message_id: uuid.UUID) -> bool:
    """After a lookup by id found nothing: restore the cold conversation the message lives in. True when it is
    worth looking again (it was cold, or was restored by someone else since the lookup)."""
    conversation_id = await repo.holding_message(db, tenant_id, message_id)
    if conversation_id is None:
        return False
    await restore(db, tenant_id, conversation_id)
    return True


async def restore_holding_run(db: Executor, tenant_id: uuid.UUID, run_id: uuid.UUID) -> bool:
    """As `restore_holding_message`, for a run id."""
    conversation_id = await repo.holding_run(db, tenant_id, run_id)
    if conversation_id is None:
        return False
    await restore(db, tenant_id, conversation_id)
    return True


async def restore_naming_user(db: Executor, tenant_id: uuid.UUID, user_id: uuid.UUID) -> int:
    """Restore every cold conversation whose document names the user: erasure, anonymisation and data-access
    exports then find their rows where they look (hot), and nothing of theirs stays inside a document."""
    count = 0
    for conversation_id in await repo.naming_user(db, tenant_id, user_id):
        count += await restore(db, tenant_id, conversation_id, explicit=True)
    return count


async def restore_unscanned(db: Database, tenant_id: uuid.UUID) -> int:
    """Restore every cold conversation of the tenant whose document holds a message never scanned for PII (written
    before the tenant's policy), each in its own transaction, deep ones too: a PII backfill then masks them where
    it looks (hot), with the logged events that carry them, instead of leaving their text in the document."""
    count = 0
    for row in await repo.cold_documents(db, tenant_id):
        held = await repo.peek_document(db, tenant_id, row["conversation_id"])
        if held is None:  # restored meanwhile: hot, so the backfill finds its messages anyway
            continue
        stored = {t.name: t for t in cold.decode(bytes(held["document"]), held["codec"])}
        messages = stored.get("message")
        if messages is None or not any(
            m.get("pii") is None and m.get("deleted_at") is None for m in orjson.loads(messages.json)
        ):
            continue
        count += await restore(db, tenant_id, row["conversation_id"], explicit=True)
    return count


async def document_of(
    db: Executor, tenant_id: uuid.UUID, conversation_id: uuid.UUID
) -> dict[str, Any] | None:
    """The decompressed document of a cold conversation (for the SQL-level tests and operators)."""
    held = await repo.peek_document(db, tenant_id, conversation_id)
    if held is None:
        return None
    return cold.as_json(bytes(held["document"]), held["codec"])


async def restore_anywhere(db: Database, conversation_id: uuid.UUID) -> bool:
    """An operator's restore (`threadline tiers restore`): the conversation's tenant read from its document."""
    tenant_id = await repo.tenant_of_cold(db, conversation_id)
    return tenant_id is not None and await restore(db, tenant_id, conversation_id, explicit=True)


@dataclass(frozen=True)
class Storage:
    """What is cold and what it saves: the moved rows' size in the hot tables against their documents'."""

    conversations: int
    rows: int
    hot_bytes: int
    cold_bytes: int

    @property
    def saved_bytes(self) -> int:
        return self.hot_bytes - self.cold_bytes

    def as_json(self) -> dict[str, Any]:
        return {
            "conversations": self.conversations,
            "rows": self.rows,
            "hotBytes": self.hot_bytes,
            "coldBytes": self.cold_bytes,
            "savedBytes": self.saved_bytes,
            "ratio": round(self.hot_bytes / self.cold_bytes, 2) if self.cold_bytes else None,
        }


async def storage(db: Executor, tenant_id: uuid.UUID | None) -> Storage:
    """The storage report of one tenant (all tenants when None)."""
    row = await repo.storage_report(db, tenant_id)
    return Storage(int(row["conversations"]), int(row["rows"]), int(row["hot_bytes"]), int(row["cold_bytes"]))


MAX_DAYS = 36_500


def require_admin(principal: Principal, what: str) -> None:
    if not principal.is_admin:
        raise forbidden(f"Only tenant admins may {what}")


async def policy(db: Executor, principal: Principal) -> int | None:
    require_admin(principal, "read the storage tiers")
    days = await repo.tenant_policy(db, principal.tenant_id)
    return None if days is None else int(days)


async def deep_policy(db: Executor, principal: Principal) -> int | None:
    require_admin(principal, "read the storage tiers")
    days = await repo.tenant_deep_policy(db, principal.tenant_id)
    return None if days is None else int(days)


async def set_deep_policy(db: Database, principal: Principal, days: int | None) -> int | None:
    require_admin(principal, "set the storage tier policy")
    if days is not None and not 1 <= days <= MAX_DAYS:
        raise bad_input(
            f"deepAfterDays must be between 1 and {MAX_DAYS}, or null for none", argument="deepAfterDays"
        )
    async with db.transaction() as tx:
        await repo.set_tenant_deep_policy(tx, principal.tenant_id, days)
    return days


async def deepen(tx: Executor, tenant_id: uuid.UUID, days: float, limit: int) -> int:
    """Cold documents frozen `days` ago or more move to deep storage (recompressed with lzma): how many."""
    rows = await repo.claim_deepen(tx, tenant_id, days, limit)
    for row in rows:
        document = cold.recompress(bytes(row["document"]), row["codec"], cold.DEEP_CODEC)
        await repo.store_deep(tx, tenant_id, row["conversation_id"], document, cold.DEEP_CODEC)
    return len(rows)


async def set_policy(db: Database, principal: Principal, days: int | None) -> int | None:
    require_admin(principal, "set the storage tier policy")
    if days is not None and not 1 <= days <= MAX_DAYS:
        raise bad_input(
            f"coldAfterDays must be between 1 and {MAX_DAYS}, or null for none", argument="coldAfterDays"
        )
    async with db.transaction() as tx:
        await repo.set_tenant_policy(tx, principal.tenant_id, days)
    return days
