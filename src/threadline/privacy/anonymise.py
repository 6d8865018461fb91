"""`userAnonymise(userId)` (issue 20 item 5): unlike erasure, the team keeps the user's conversations and
messages, but not who wrote them nor the PII in them.

In one transaction, audited:
- the user is replaced by a pseudonym of their own (a new user "Anonymised user", same team, MEMBER, no
  email, no credentials): every reference to them (authorship, ownership, memberships, folders, runs, audit
  entries, ids in logged events) now names the pseudonym, and their user row goes;
- the PII in what they wrote is masked whatever the tenant's policy: message content, parts, metadata values,
  earlier versions (edits), streamed chunks (dropped), feedback comments, the titles and descriptions of the
  conversations they own, and the logged events carrying any of it; search vectors and embeddings follow the
  content (their triggers), and titles, summaries and tag suggestions made from it are made again;
- their credentials go (API keys; a JWT subject of theirs stays refused, as after an erasure), and their open
  sockets close.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from threadline.audit import repository as audit_repo
from threadline.audit.service import AuditAction, record
from threadline.auth import live
from threadline.auth import repository as users
from threadline.auth.principal import Principal, Role
from threadline.db import Database
from threadline.enrich import repository as enrichment
from threadline.errors import bad_input, forbidden, not_found
from threadline.events.scrub import follow_messages
from threadline.ids import Kind, encode_id
from threadline.porting import repository as porting_repo
from threadline.porting.erasure import PLACEHOLDER_KEY
from threadline.privacy import repository as repo
from threadline.privacy.masking import mask, mask_json, mask_text, to_json
from threadline.privacy.writing import mask_parts
from threadline.tiers import service as tiers

PSEUDONYM_NAME = "Anonymised user"
# (table, column) rows that are the person's credentials or live state, not something the team keeps.
CREDENTIALS = {
    ("api_key", "user_id"),
    ("presence", "id"),
    ("typing_state", "user_id"),
    ("rate_limit_bucket", "user_id"),
    ("rate_limit_assignment", "user_id"),
    ("idempotency_key", "user_id"),
}


@dataclass(frozen=True)
class Anonymisation:
    user_id: uuid.UUID
    pseudonym_id: uuid.UUID
    messages: int
    messages_masked: int
    detections: int


async def anonymise_user(db: Database, principal: Principal, user_id: uuid.UUID) -> Anonymisation:
    tenant = principal.tenant_id
    async with db.transaction() as tx:
        user = await users.user_by_id(tx, tenant, user_id)
        if user is None:
            raise not_found("User")
        if not principal.is_admin:
            raise forbidden("Only tenant admins may anonymise users")
        if user_id == principal.user_id:
            raise forbidden("Admins cannot anonymise themselves; ask another admin")
        settings = await porting_repo.tenant_settings(tx, tenant, lock=True)
        if settings.get(PLACEHOLDER_KEY) == str(user_id):
            raise bad_input("The anonymous placeholder user cannot be anonymised", argument="userId")
        pseudonym = (
            await users.insert_user(
                tx, tenant, email=None, display_name=PSEUDONYM_NAME, role=Role.MEMBER, team=user["team"]
            )
        )["id"]

        # Their rows in cold documents (tiers/) come back first, so the masking below reaches them too.
        await tiers.restore_naming_user(tx, tenant, user_id)
        # What they wrote, masked (the rows are locked: a concurrent edit waits for this transaction).
        messages = await repo.lock_authored(tx, tenant, user_id)
        masked_rows = []
        detections = 0
        for row in messages:
            content, spans = mask(row["content"])
            parts = mask_parts(row["parts"])
            metadata = mask_json(row["metadata"])
            changed = content != row["content"] or parts != row["parts"] or metadata != row["metadata"]
            await repo.set_anonymised(tx, tenant, row["id"], content, parts, metadata, to_json(spans))
            detections += len(spans)
            if changed:
                masked_rows.append({**row, "content": content})
        ids = [row["id"] for row in messages]
        for edit in await repo.edits_of_messages(tx, tenant, ids):
            await repo.set_edit_contents(tx, tenant, [edit["id"]], [mask_text(edit["content"])])
        await repo.drop_chunks_of(tx, tenant, ids)
        await follow_messages(tx, tenant, masked_rows)
        # Titles, summaries and suggestions made from their unmasked words are made again.
        await enrichment.forget_results_of(tx, tenant, [row["id"] for row in masked_rows])
        await repo.mask_feedback_comments(tx, tenant, user_id, mask_text)
        await repo.mask_owned_conversations(tx, tenant, user_id, mask_text)

        # Who they were: every reference now names the pseudonym; their credentials go.
        for table, column, scoped in await porting_repo.user_references(tx):
            if table == "app_user":
                continue
            if (table, column) in CREDENTIALS:
                await porting_repo.delete_user_rows(tx, tenant, table, column, scoped, user_id)
            else:
                await porting_repo.reassign_user_rows(tx, tenant, table, column, scoped, user_id, pseudonym)
        await repo.replace_event_ids(
            tx, tenant, user_id, pseudonym, encode_id(Kind.USER, user_id), encode_id(Kind.USER, pseudonym)
        )
        await audit_repo.reassign_user(tx, tenant, user_id, pseudonym)
        await live.user_erased(tx, tenant, user_id)  # sockets close; a JWT subject of theirs stays refused
        await porting_repo.delete_user(tx, tenant, user_id)
        details = {
            "pseudonymId": encode_id(Kind.USER, pseudonym),
            "messages": len(messages),
            "messagesMasked": len(masked_rows),
            "detections": detections,
        }
        await record(tx, principal, AuditAction.USER_ANONYMISE, (Kind.USER, pseudonym), details)
    live.committed()
    return Anonymisation(user_id, pseudonym, len(messages), len(masked_rows), detections)
