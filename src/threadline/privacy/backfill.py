"""`threadline pii backfill`: the tenant's PII policy applied to what was written before it (issue 20 item 2).

Messages never scanned (`message.pii IS NULL`) are taken in batches by id, one transaction per batch (rows
locked with SKIP LOCKED, so two backfills or live writers do not wait on each other), and:
- DETECT, MASK_ON_READ: their detections are stored; under MASK_ON_READ the logged events that carry their
  text are rewritten masked (a replay may reach any reader);
- MASK_ON_WRITE: their content, parts and earlier versions (edits) are masked in place, streamed chunks are
  dropped and logged events rewritten (deltas lose their text, as after an edit); the search vector follows
  the content (its trigger).
Under both masking policies, titles, summaries and tag suggestions made from a masked message's text are made
again (enrichment stores them masked).
Under both masking policies, cold conversations (tiers/) whose document holds unscanned messages are restored
first (`restored` in the report): the document's copy of their text, and the logged events carrying it (the event
log is never moved into documents), are then masked as hot ones are.
A batch is all or nothing, and the command can be stopped and run again: it resumes with what is left.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from threadline.db import Database
from threadline.enrich import repository as enrichment
from threadline.events.scrub import follow_messages
from threadline.privacy import repository as repo
from threadline.privacy.masking import mask_text
from threadline.privacy.modes import PiiPolicy, masks_events
from threadline.privacy.writing import event_text, for_storage
from threadline.threads import repository as threads_repo
from threadline.tiers import service as tiers


@dataclass
class BackfillReport:
    tenants: int = 0
    messages: int = 0
    with_pii: int = 0
    masked: int = 0
    restored: int = 0  # cold conversations brought back because their document held unscanned messages
    detections: dict[str, int] = field(default_factory=dict)


async def backfill(
    db: Database, tenant_id: uuid.UUID | None = None, batch: int = 500, report: BackfillReport | None = None
) -> BackfillReport:
    report = report or BackfillReport()
    for tenant in await repo.tenants_with_policy(db, tenant_id):
        policy = PiiPolicy(tenant["policy"])
        report.tenants += 1
        if masks_events(policy):
            report.restored += await tiers.restore_unscanned(db, tenant["id"])
        while await _batch(db, tenant["id"], policy, batch, report) == batch:
            pass
    return report


async def _batch(
    db: Database, tenant_id: uuid.UUID, policy: PiiPolicy, size: int, report: BackfillReport
) -> int:
    async with db.transaction() as tx:
        rows = await repo.lock_unscanned(tx, tenant_id, size)
        followed = []
        for row in rows:
            text = for_storage(policy, row["content"], row["parts"])
            await repo.set_scanned(tx, tenant_id, row["id"], text.content, text.parts, text.pii or [])
            report.messages += 1
            if not text.pii:
                continue
            report.with_pii += 1
            for d in text.pii:
                report.detections[d["kind"]] = report.detections.get(d["kind"], 0) + 1
            if policy is PiiPolicy.MASK_ON_WRITE:
                report.masked += 1
                edits = await repo.edits_of(tx, tenant_id, row["id"])
                await repo.set_edit_contents(
                    tx, tenant_id, [e["id"] for e in edits], [mask_text(e["content"]) for e in edits]
                )
            if masks_events(policy):
                followed.append({**row, "content": event_text(policy, row["content"])})
        if followed:
            if policy is PiiPolicy.MASK_ON_WRITE:
                await threads_repo.drop_chunks(tx, tenant_id, [r["id"] for r in followed])
            await follow_messages(tx, tenant_id, followed)
            # Titles, summaries and suggestions made from their unmasked text are made again (stored masked).
            await enrichment.forget_results_of(tx, tenant_id, [r["id"] for r in followed])
    return len(rows)
