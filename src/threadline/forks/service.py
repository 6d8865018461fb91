"""Fork rules: what each mode copies, the size cap, provenance, and the one transaction it all happens in."""

from __future__ import annotations

import math
import uuid

import asyncpg

from threadline.auth.principal import Principal
from threadline.conversations import repository as conversations
from threadline.conversations.access import Access, require
from threadline.conversations.rules import normalise_title
from threadline.db import Database
from threadline.errors import bad_input, not_found
from threadline.events.announce import publish_conversation_forked
from threadline.events.payloads import ConversationForked
from threadline.forks import repository as repo
from threadline.ratelimits import service as ratelimits
from threadline.settings import Settings
from threadline.threads import branch_repository as branches
from threadline.threads import repository as threads

MODES = ("BRANCH", "PATH_ONLY", "THREAD")


async def fork(
    db: Database,
    settings: Settings,
    principal: Principal,
    message_id: uuid.UUID,
    mode: str,
    title: str | None,
) -> tuple[asyncpg.Record, uuid.UUID]:
    """Copy what `mode` selects around `message_id` into a new conversation owned by the caller; returns the
    conversation and the id of the message's copy. BRANCH: the path root -> message and everything under the
    message; PATH_ONLY: the path alone; THREAD: the message's whole thread. Runs are not copied.

    One transaction, one statement for the rows whatever their number (forks.repository.copy_messages);
    more than THREADLINE_FORK_MAX_MESSAGES is refused up front, so a huge thread is a clear error, not a timeout.
    """
    if mode not in MODES:
        raise bad_input(f"mode must be one of {', '.join(MODES)}", argument="mode")
    new_title = normalise_title(title, settings) if title is not None else None
    async with db.transaction() as tx:
        message = await threads.message(tx, principal.tenant_id, message_id)
        if message is None:
            raise not_found("Message")
        # A message of a conversation the caller may not read is "Message not found", as an unknown id is.
        source = await require(tx, principal, message["conversation_id"], Access.READ, asked_for="Message")
        cap = settings.fork_max_messages
        size = await repo.count_at_most(tx, principal.tenant_id, message, mode, cap)
        if size > cap:
            raise bad_input(
                f"This fork would copy more than {cap} messages (THREADLINE_FORK_MAX_MESSAGES); fork a smaller "
                "part (mode BRANCH or PATH_ONLY from a deeper message)",
                argument="mode",
                limit=cap,
            )
        # Priced by its size, as an import is (one `mutations` unit per started THREADLINE_IMPORT_ITEMS_PER_MUTATION
        # messages copied), before anything is copied: one mutation could otherwise copy 50,000 messages again and
        # again. Drawn outside this transaction (the budget's row is not held while the rows are copied).
        per_unit = max(settings.import_items_per_mutation, 1)
        await ratelimits.spend_by_size(db, settings, principal, "mutations", math.ceil(size / per_unit) - 1)
        row = await conversations.insert_conversation(
            tx,
            principal.tenant_id,
            principal.user_id,
            title=new_title or source["title"],
            description=source["description"],
            tags=list(source["tags"] or []),
            session_id=None,
            ai_provider=source["ai_provider"],
            model=source["model"],
            max_history_messages=source["max_history_messages"],
        )
        await conversations.insert_participant(tx, principal.tenant_id, row["id"], principal.user_id, "OWNER")
        copied = await repo.copy_messages(tx, principal.tenant_id, message, mode, row["id"])
        await repo.insert_thread(
            tx, principal.tenant_id, row["id"], copied["root_id"], copied["copied"] - 1, copied["last_seq"]
        )
        # The forker is on the copy of the message they forked at (Thread.currentLeaf), as after an import.
        await branches.set_current_leaf(
            tx, principal.tenant_id, principal.user_id, copied["root_id"], copied["message_id"]
        )
        # Copies' usage is not counted again (the source's messages spent it): the token count starts at 0.
        row = await conversations.update_conversation(
            tx,
            principal.tenant_id,
            row["id"],
            {
                "message_count": copied["copied"],
                "metadata": source["metadata"],
                "forked_from_conversation_id": source["id"],
                "forked_from_message_id": message["id"],
            },
        )
        await publish_conversation_forked(
            tx,
            principal.tenant_id,
            ConversationForked(row["id"], message["id"], mode, copied["copied"]),
            conversation_id=source["id"],
            root_id=message["root_id"],
            recipient_id=principal.user_id,
        )
    return row, copied["message_id"]
