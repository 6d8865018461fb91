"""A gateway call with a `session_id`: which conversation and branch it continues, and the prompt it sends.

- The session names a conversation by its id (`cnv_...`) or its `sessionId` (the most recently active of the
  caller's conversations with it). Unknown, invisible, another tenant's or deleted: 404 like OpenAI's; read-only
  access: 403; archived: 409.
- The branch continued is the caller's current branch (threads.branches: the leaf they are on, else the newest
  branch) of the conversation's most recently active thread; the caller ends up on the stored reply.
- The prompt is the request's leading system/developer messages, then the branch (root first, the last
  `maxHistoryMessages` of it, the oldest dropped until everything fits the model's budget as for runs), then the
  rest of the request. The request itself is never dropped: when it alone does not fit, 400
  context_length_exceeded. Tool calls and results stored as parts are sent as such (gateway.messages).
- A session in a conversation the caller is not a participant of (a tenant admin's) is a read of its content by
  a non-participant, audited as `conversation.read` like every other (audit.reads), once the branch is read.
- The branch is sent as the caller reads it: under MASK_ON_READ, what others wrote is masked (privacy.reading).
  The model's answer streams straight to the caller, never through a read that would mask it, so a model asked to
  repeat its prompt (`echo` does) would otherwise hand them a colleague's PII.
- Stored, as replies chained under the leaf: the request's messages after its last assistant message (user and
  tool messages; system and developer ones are sent, not kept), then the assistant's reply. So a client sends
  only what is new; in a tool round, the tool results (or the assistant message with its tool calls and the
  results: the stored copy of that assistant message then gives way to the one sent).
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

import asyncpg

from threadline.audit import reads
from threadline.auth.principal import Principal
from threadline.conversations.access import Access, access_level, require_writable
from threadline.db import Database
from threadline.errors import ErrorCode, ThreadlineError, bad_input, forbidden
from threadline.gateway import repository as repo
from threadline.gateway.messages import STORED_ROLES, draft_of, sent_message, tokens
from threadline.gateway.request import ChatRequest
from threadline.ids import Kind, parse_id
from threadline.privacy import reading
from threadline.runs.context import PROMPT_OVERHEAD_TOKENS, approximate_tokens, history_limit, prompt_budget
from threadline.settings import Settings
from threadline.threads import branches
from threadline.threads.paths import ancestor_paths
from threadline.threads.service import MessageDraft
from threadline.tiers import service as tiers

INSTRUCTION_ROLES = frozenset({"system", "developer"})


@dataclass(frozen=True)
class Session:
    conversation: asyncpg.Record
    leaf_id: uuid.UUID | None  # the message the stored ones go under; None: they start a thread
    drafts: list[MessageDraft]  # stored before the reply, in order
    prompt: list[dict[str, Any]]  # what the model is sent
    prompt_tokens: int  # the estimate recorded when the model reports no usage


def session_not_found(session_id: str) -> ThreadlineError:
    return ThreadlineError(
        ErrorCode.NOT_FOUND,
        f"No conversation with the session id {session_id[:80]!r} exists or you do not have access to it",
        openaiCode="session_not_found",
        param="session_id",
    )


async def conversation_of(db: Database, principal: Principal, session_id: str) -> asyncpg.Record:
    """The session's conversation (with `latest_root`) if the caller may write to it: 404 session_not_found
    when it is unknown, invisible or deleted, 403 when read-only, 409 when archived."""
    parsed = parse_id(session_id)
    conversation_id = parsed[1] if parsed is not None and parsed[0] is Kind.CONVERSATION else None
    row = await repo.session_conversation(db, principal, conversation_id, session_id)
    if row is None or row["status"] == "DELETED":
        raise session_not_found(session_id)
    level = access_level(principal, row)
    if level is Access.NONE:
        raise session_not_found(session_id)
    if level < Access.WRITE:
        raise forbidden("You have read-only access to this conversation")
    require_writable(row)
    if row["cold"]:  # its content is in a cold document (tiers/): back first, then its latest thread
        await tiers.restore(db, principal.tenant_id, row["id"])
        row = await repo.session_conversation(db, principal, conversation_id, session_id)
        assert row is not None
    return row


async def open_session(
    db: Database, settings: Settings, principal: Principal, request: ChatRequest
) -> Session:
    assert request.session_id is not None
    conversation = await conversation_of(db, principal, request.session_id)
    branch = await _branch(db, principal, conversation["latest_root"])
    leading = _leading(request.messages)
    instructions, rest = request.messages[:leading], request.messages[leading:]
    drafts = _drafts(request.messages, leading, settings)
    if not branch and not drafts:
        raise bad_input("The session has no messages yet: send a user message", param="messages")
    reader = reading.reader_for(principal)
    history = [m for m in (_sent_as_read(reader, row) for row in branch) if m is not None]
    if rest and rest[0]["role"] == "assistant" and history and history[-1]["role"] == "assistant":
        history.pop()  # the client sends the stored reply back (with its tool calls)
    fixed = PROMPT_OVERHEAD_TOKENS + sum(tokens(m) for m in request.messages)
    if request.body.get("tools"):
        fixed += approximate_tokens(json.dumps(request.body["tools"]))
    budget = prompt_budget(settings, request.model)
    kept = _trimmed(history, history_limit(None, conversation["max_history_messages"]), budget - fixed)
    if kept is None:
        raise bad_input(
            f"The messages need about {fixed} tokens; the model's budget is {budget} "
            "(its context window minus the tokens reserved for the reply)",
            openaiCode="context_length_exceeded",
            param="messages",
        )
    prompt = [*instructions, *kept, *rest]
    if branch and conversation["viewer_role"] is None:
        await reads.record_read(db, principal, conversation["id"], reads.via_role(principal))
    leaf_id = branch[-1]["id"] if branch else None
    return Session(conversation, leaf_id, drafts, prompt, fixed + sum(tokens(m) for m in kept))


async def _branch(db: Database, principal: Principal, root_id: uuid.UUID | None) -> list[asyncpg.Record]:
    """The caller's current branch (threads.branches) of the thread of `root_id`, root first, with parts; empty
    without a thread (or when its branch ends on a deleted message: the session then starts a new one)."""
    if root_id is None:
        return []
    leaves = await branches.current_leaves(db, principal.tenant_id, principal.user_id, [root_id])
    leaf_id, path = leaves[root_id]
    paths = [*ancestor_paths(path), path] if path else [b""]
    rows = await repo.branch_rows(db, principal.tenant_id, root_id, paths)
    if not rows or rows[-1]["id"] != leaf_id or rows[-1]["deleted_at"] is not None:
        return []
    return rows


def _sent_as_read(reader: reading.Reader | None, row: asyncpg.Record) -> dict[str, Any] | None:
    """A branch message as the model is sent it, masked as `reader` reads it (None: unmasked)."""
    if reader is None or not reader.masks(row["author_id"]):
        return sent_message(row, row["parts"])
    author = row["author_id"]
    masked = {**row, "content": reader.content(author, row["content"] or "")}
    return sent_message(masked, reader.json(author, row["parts"]))


def _leading(messages: list[dict[str, Any]]) -> int:
    """How many of the request's first messages are instructions (sent, never stored)."""
    leading = 0
    while leading < len(messages) and messages[leading]["role"] in INSTRUCTION_ROLES:
        leading += 1
    return leading


def _new_start(messages: list[dict[str, Any]], leading: int) -> int:
    """The index of the first message after the request's last assistant message (the new ones)."""
    for index in range(len(messages) - 1, leading - 1, -1):
        if messages[index]["role"] == "assistant":
            return index + 1
    return leading


def stored_count(request: ChatRequest) -> int:
    """How many of the request's messages a session call stores (known before the session is read): each is a
    write, drawn from the `mutations` budget as a messageReply is."""
    messages = request.messages
    start = _new_start(messages, _leading(messages))
    return sum(1 for message in messages[start:] if message["role"] in STORED_ROLES)


def _drafts(messages: list[dict[str, Any]], leading: int, settings: Settings) -> list[MessageDraft]:
    """The request's messages after its last assistant message, as stored (system ones are not kept)."""
    start = _new_start(messages, leading)
    drafts = [draft_of(index, messages[index], settings) for index in range(start, len(messages))]
    return [d for d in drafts if d is not None]


def _trimmed(history: list[dict[str, Any]], max_history: int, budget: int) -> list[dict[str, Any]] | None:
    """The last `max_history` messages, the oldest dropped until they fit `budget` (and tool results whose
    call was dropped with them); None if not even the request fits."""
    if budget < 0:
        return None
    kept = history[-max_history:] if max_history > 0 else []
    total = sum(tokens(m) for m in kept)
    while kept and (total > budget or kept[0]["role"] == "tool"):
        total -= tokens(kept.pop(0))
    return kept
