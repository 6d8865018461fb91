"""Erasure of a user (right to be forgotten), in one transaction with an audit record.

- Conversations the user owns are hard-deleted, with everything in them (cascade) and their events.
- Their messages in other conversations become tombstones (content, edit history, chunks and
  attachments removed; the node stays, so other users' replies remain readable) authored by the
  tenant's anonymous placeholder user. With `redact_messages=False` the content stays, anonymised.
- Rows that are only about them (API keys, memberships, read markers, presence, typing, invites to
  them, rate-limit buckets and profile assignment) are deleted; references that attribute an object
  that stays (authorship, edits, invites they sent, runs they started) now point at the placeholder.
- Events that mention them are removed from the event log, then the user row itself is deleted.

The audit entry of the erasure keeps the erased user's id (as proof the request was carried out);
earlier audit entries by or about them are rewritten to the placeholder.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from threadline.audit import repository as audit_repo
from threadline.audit.service import AuditAction, record
from threadline.auth import live as live_credentials
from threadline.auth import repository as users
from threadline.auth.principal import Principal, Role
from threadline.db import Database, Executor
from threadline.errors import bad_input, forbidden, not_found
from threadline.ids import Kind, encode_id
from threadline.porting import repository as repo
from threadline.runs import repository as runs_repo
from threadline.threads.service import follow_content
from threadline.tiers import service as tiers

PLACEHOLDER_KEY = "anonymousUserId"
PLACEHOLDER_NAME = "Deleted user"
# (table, column) rows that exist only for the user: deleted, not reassigned. Everything keyed by a user
# is personal data; moving it to the placeholder would also collide with the next erased user's rows
# (one bucket per user and budget, one assignment per user).
PERSONAL = {
    ("api_key", "user_id"),
    ("participant", "user_id"),
    ("presence", "id"),
    ("typing_state", "user_id"),
    ("read_marker", "user_id"),
    ("thread_current_leaf", "user_id"),  # the branch they were on in each thread
    ("invite", "user_id"),
    ("rate_limit_bucket", "user_id"),
    ("rate_limit_assignment", "user_id"),
    ("idempotency_key", "user_id"),  # holds ids of what they created, never content
    ("import_source", "owner_id"),  # their import identities (their conversations are deleted anyway)
    ("folder", "user_id"),  # their folders, placements, pins and bookmarks: their own view (organise/)
    ("conversation_folder", "user_id"),
    ("conversation_pin", "user_id"),
    ("message_bookmark", "user_id"),
    ("message_feedback", "user_id"),  # their ratings and comments: theirs alone
    ("share_link", "created_by"),  # links they made: a link outliving its maker would publish for no one
    ("file", "uploaded_by"),  # their uploads (the triggers drop blobs no upload names any more)
    ("gateway_call", "user_id"),  # the leases of their /v1 calls in progress (their keys go with them)
}
# (table, column) that attribute someone else's object (or a shared one) to the user: these now name the
# placeholder, so the object stays. A foreign key to app_user in neither set is treated as personal
# (tests/test_hostile_porting.py makes adding one a conscious choice).
ATTRIBUTED = {
    ("conversation", "owner_id"),  # their own conversations are deleted above: only ever a no-op
    ("message", "author_id"),
    ("message_edit", "editor_id"),
    ("invite", "inviter_id"),
    ("conversation_link", "created_by"),  # a link is shared by whoever reads both ends: it stays
    ("run", "created_by"),
}


@dataclass(frozen=True)
class Erasure:
    user_id: uuid.UUID
    placeholder_id: uuid.UUID
    conversations_deleted: int
    messages_redacted: int
    messages_reassigned: int


async def placeholder_user(tx: Executor, tenant_id: uuid.UUID) -> uuid.UUID:
    """The tenant's anonymous author, created on first use (under the tenant row's lock)."""
    settings = await repo.tenant_settings(tx, tenant_id, lock=True)
    existing = settings.get(PLACEHOLDER_KEY)
    if existing and await users.user_by_id(tx, tenant_id, uuid.UUID(existing)) is not None:
        return uuid.UUID(existing)
    row = await users.insert_user(
        tx, tenant_id, email=None, display_name=PLACEHOLDER_NAME, role=Role.MEMBER, team=None
    )
    await repo.merge_tenant_settings(tx, tenant_id, {PLACEHOLDER_KEY: str(row["id"])})
    return row["id"]  # type: ignore[no-any-return]


async def erase_user(
    db: Database, principal: Principal, user_id: uuid.UUID, *, redact_messages: bool = True
) -> Erasure:
    tenant = principal.tenant_id
    async with db.transaction() as tx:
        # Looked up first: a user outside the caller's tenant is NOT_FOUND whoever asks (API.md).
        if await users.user_by_id(tx, tenant, user_id) is None:
            raise not_found("User")
        if not principal.is_admin:
            raise forbidden("Only tenant admins may erase users")
        if user_id == principal.user_id:
            raise forbidden("Admins cannot erase themselves; ask another admin")
        placeholder = await placeholder_user(tx, tenant)
        if placeholder == user_id:
            raise bad_input("The anonymous placeholder user cannot be erased", argument="userId")
        owned = await repo.lock_owned_conversations(tx, tenant, user_id)
        await repo.delete_conversations(tx, tenant, owned)
        # Their rows in cold documents (tiers/) come back first, so what follows finds them (and no document
        # keeps a copy).
        await tiers.restore_naming_user(tx, tenant, user_id)

        authored = await repo.lock_authored_messages(tx, tenant, user_id)
        redacted = 0
        if redact_messages and authored:
            redacted = len(authored)
            tombstones = await repo.redact_messages(tx, tenant, authored)
            # Events carrying their text that the deletes below keep (deltas name no user) lose it.
            await follow_content(tx, tenant, tombstones)
        if redact_messages:
            # The instructions they gave their runs (read in `Run.instructions`) are their words as well.
            await runs_repo.redact_instructions(tx, tenant, user_id)
        public_id = encode_id(Kind.USER, user_id)
        mentioned = [encode_id(Kind.MESSAGE, m) for m in authored] if redact_messages else []
        await repo.delete_events_mentioning(tx, tenant, user_id, public_id, mentioned)
        for table, column, scoped in await repo.user_references(tx):
            if (table, column) in ATTRIBUTED:
                await repo.reassign_user_rows(tx, tenant, table, column, scoped, user_id, placeholder)
            elif table != "app_user":
                await repo.delete_user_rows(tx, tenant, table, column, scoped, user_id)
        await audit_repo.reassign_user(tx, tenant, user_id, placeholder)
        # After the event scrub above (its announcement must survive it): open sockets of the user close, and a
        # JWT subject of theirs stays erased.
        await live_credentials.user_erased(tx, tenant, user_id)
        await repo.delete_user(tx, tenant, user_id)
        details = {
            "conversationsDeleted": len(owned),
            "messagesRedacted": redacted,
            "messagesReassigned": len(authored),
            "placeholderId": encode_id(Kind.USER, placeholder),
        }
        await record(tx, principal, AuditAction.USER_ERASE, (Kind.USER, user_id), details)
    live_credentials.committed()
    return Erasure(user_id, placeholder, len(owned), redacted, len(authored))
