"""The bulk write path of imports: many new conversations in one transaction, at COPY speed.

`threadline import` and the API's import both come here (porting.service.Importer): a batch of planned
conversations is written with a handful of statements whatever its size: their sources claimed, conversations and
owners inserted (one statement), sequence numbers drawn (one), every message COPYed into a staging table and
moved into `message` by one INSERT ... SELECT that builds the full-text vectors set-based (the per-row trigger is
skipped for them), their threads COPYed, current leaves, attachments and feedback one statement each.

Why vectors in the same transaction rather than a background indexer: search is exact the moment the import
commits (nothing to report as pending), and each row is written once. Filling the vectors later would write every
imported row a second time, and since the GIN-indexed column changes such an UPDATE cannot be HOT: every index
of `message` would get a second entry for each row. Building a vector costs the same either way (~40 us a
message: two to_tsvector parses, simple and stemmed); what the set-based build saves is the PL/pgSQL call and
the tenant's configuration look-up of each row.

A batch commits whole or not at all; the caller retries a failed batch one conversation at a time, so one bad
conversation fails alone (porting.service).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from threadline.db import Transaction
from threadline.feedback import repository as feedback_repo
from threadline.files import repository as file_repo
from threadline.porting import bulk_repository as bulk_repo
from threadline.porting import repository as repo
from threadline.porting.importer import Plan, message_rows, thread_records


@dataclass
class Written:
    """What a batch wrote: the conversation id of each plan, None where its source was imported already by this
    user (a concurrent import, or the same conversation earlier in the file): nothing of it was written."""

    conversation_ids: list[uuid.UUID | None]


async def insert_new(tx: Transaction, tenant_id: uuid.UUID, user_id: uuid.UUID, plans: list[Plan]) -> Written:
    """Insert planned new conversations in the caller's transaction."""
    ids = [uuid.uuid4() for _ in plans]
    claimed = await bulk_repo.insert_conversations(
        tx,
        tenant_id,
        user_id,
        [
            {
                **{k: v for k, v in p.conversation.items() if k != "metadata"},
                "metadata": p.conversation.get("metadata") or None,
                "id": cid,
                "source": p.source,
                "external_id": p.external_id,
                "imported_from": p.origin,
                "node_digests": p.node_digests,
                "fingerprint": p.fingerprint.hex() if p.fingerprint is not None else None,
            }
            for p, cid in zip(plans, ids, strict=True)
        ],
    )
    kept = [(p, cid) for p, cid in zip(plans, ids, strict=True) if cid in claimed]
    seqs = await repo.next_seqs(tx, sum(len(p.messages) for p, _ in kept))
    records: list[tuple[Any, ...]] = []
    threads: list[tuple[Any, ...]] = []
    leaves: list[tuple[uuid.UUID, uuid.UUID]] = []
    attachments: list[dict[str, Any]] = []
    rated: list[tuple[Any, ...]] = []
    start = 0
    for plan, cid in kept:
        count = len(plan.messages)
        rows, seq_of = message_rows(plan, cid, user_id, seqs[start : start + count])
        start += count
        records.extend(rows)
        threads.extend(thread_records(plan, tenant_id, cid, seq_of))
        messages = plan.messages
        if plan.current is not None:
            leaf = messages[plan.current]
            leaves.append((messages[leaf["root_index"]]["id"], leaf["id"]))
        attachments.extend(
            {"message_id": messages[i]["id"], "position": position, "data": data}
            for i, position, data in plan.attachments
        )
        rated.extend(
            (
                m["id"],
                m["feedback"].rating,
                m["feedback"].reasons,
                m["feedback"].comment,
                *m["feedback_times"],
            )
            for m in messages
            if m.get("feedback") is not None
        )
    await bulk_repo.insert_messages(tx, tenant_id, records)
    await repo.copy_threads(tx, threads)
    await bulk_repo.set_current_leaves(tx, tenant_id, user_id, [r for r, _ in leaves], [m for _, m in leaves])
    await bulk_repo.insert_attachments(tx, tenant_id, attachments)
    await feedback_repo.insert_many(tx, tenant_id, user_id, rated)
    for plan, _ in kept:
        for index, cut in plan.oversized.items():
            if cut.file_id is not None:  # the file of its whole text, stored before the transaction
                await file_repo.attach(tx, tenant_id, plan.messages[index]["id"], [cut.file_id])
    return Written([cid if cid in claimed else None for cid in ids])
