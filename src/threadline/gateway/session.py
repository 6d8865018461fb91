"""A gateway call with a `session_id`: which conversation and branch it continues, and the prompt it sends.

- The session names a conversation by its id (`cnv_...`) or its `sessionId` (the most recently active of the
  caller's conversations with it). Unknown, invisible, another tenant's or deleted: 404 like OpenAI's; read-only
  access: 403; archived: 409.
- The branch continued is the newest leaf of the conversation's most recently active thread.
- The prompt is the request's leading system/developer messages, then the branch (root first, the last
  `maxHistoryMessages` of it, the oldest dropped until everything fits the model's budget as for runs), then the
  rest of the request. The request itself is never dropped: when it alone does not fit, 400
  context_length_exceeded.
- Stored, as replies chained under the leaf: the request's messages after its last assistant message (user and
  tool messages; system and developer ones are sent, not kept), then the assistant's reply. So a client sends
  only what is new; in a tool round, the assistant message with its tool calls and the tool results (the stored
  copy of that assistant message gives way to the one sent, which carries the calls).
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

import asyncpg

from threadline.auth.principal import Principal
from threadline.conversations.access import Access, require, require_writable
from threadline.db import Database
from threadline.errors import ErrorCode, ThreadlineError, bad_input
from threadline.gateway import repository as repo
from threadline.gateway.request import ChatRequest, text_of
from threadline.ids import Kind, parse_id
from threadline.runs import output_repository as streams
from threadline.runs.context import (
    MESSAGE_OVERHEAD_TOKENS,
    PROMPT_OVERHEAD_TOKENS,
    ChatMessage,
    approximate_tokens,
    history_limit,
    message_tokens,
    prompt_budget,
)
from threadline.settings import Settings
from threadline.threads.service import MessageDraft, path_ids, validate_content

# How stored roles are sent (as runs send them: a stored tool result has lost its call id, so it is user text).
SENT_ROLES = {"USER": "user", "TOOL": "user", "ASSISTANT": "assistant", "SYSTEM": "system"}
STORED_ROLES = {"user": "USER", "tool": "TOOL", "function": "TOOL", "assistant": "ASSISTANT"}
INSTRUCTION_ROLES = frozenset({"system", "developer"})


@dataclass(frozen=True)
class Session:
    conversation: asyncpg.Record
    leaf: asyncpg.Record | None
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
    conversation_id: uuid.UUID | None = None
    parsed = parse_id(session_id)
    if parsed is not None and parsed[0] is Kind.CONVERSATION:
        conversation_id = parsed[1]
    try:
        row = await require(db, principal, conversation_id, Access.READ) if conversation_id else None
    except ThreadlineError:
        row = None
    if row is None:
        found = await repo.session_conversation(db, principal, session_id)
        if found is None:
            raise session_not_found(session_id)
        conversation_id = found
    assert conversation_id is not None
    try:
        row = await require(db, principal, conversation_id, Access.WRITE)
    except ThreadlineError as exc:
        if exc.code is ErrorCode.NOT_FOUND:
            raise session_not_found(session_id) from None
        raise
    if row["status"] == "DELETED":
        raise session_not_found(session_id)
    require_writable(row)
    return row


async def open_session(
    db: Database, settings: Settings, principal: Principal, request: ChatRequest
) -> Session:
    assert request.session_id is not None
    conversation = await conversation_of(db, principal, request.session_id)
    leaf = await repo.newest_leaf(db, principal.tenant_id, conversation["id"])
    branch: list[asyncpg.Record] = []
    if leaf is not None:
        (ids,) = await path_ids(db, principal.tenant_id, [leaf])
        rows = {r["id"]: r for r in await streams.messages_by_ids(db, principal.tenant_id, ids)}
        branch = [rows[i] for i in ids if i in rows]
    leading = 0
    while leading < len(request.messages) and request.messages[leading]["role"] in INSTRUCTION_ROLES:
        leading += 1
    instructions, rest = request.messages[:leading], request.messages[leading:]
    drafts = _drafts(request.messages, leading, settings)
    if leaf is None and not drafts:
        raise bad_input("The session has no messages yet: send a user message", param="messages")
    history = [
        ChatMessage(SENT_ROLES[row["role"]], row["content"])
        for row in branch
        if row["deleted_at"] is None and row["content"]
    ]
    if rest and rest[0]["role"] == "assistant" and history and history[-1].role == "assistant":
        history.pop()  # the client sends the stored reply back with its tool calls
    fixed = PROMPT_OVERHEAD_TOKENS + sum(_request_tokens(m) for m in request.messages)
    if request.body.get("tools"):
        fixed += approximate_tokens(json.dumps(request.body["tools"]))
    kept = _trimmed(
        history,
        history_limit(None, conversation["max_history_messages"]),
        prompt_budget(settings, request.model) - fixed,
    )
    if kept is None:
        raise bad_input(
            f"The messages need about {fixed} tokens; the model's budget is "
            f"{prompt_budget(settings, request.model)} (its context window minus the tokens reserved for the reply)",
            openaiCode="context_length_exceeded",
            param="messages",
        )
    prompt = [*instructions, *(m.as_dict() for m in kept), *rest]
    return Session(conversation, leaf, drafts, prompt, fixed + sum(message_tokens(m) for m in kept))


def _drafts(messages: list[dict[str, Any]], leading: int, settings: Settings) -> list[MessageDraft]:
    start = leading
    for index in range(len(messages) - 1, leading - 1, -1):
        if messages[index]["role"] == "assistant":
            start = index + 1
            break
    drafts: list[MessageDraft] = []
    for index in range(start, len(messages)):
        message = messages[index]
        role = STORED_ROLES.get(message["role"])
        if role is None:
            continue
        content = text_of(message.get("content"))
        try:
            validate_content(content, settings)
        except ThreadlineError as exc:
            raise bad_input(f"messages[{index}]: {exc.message}", param=f"messages[{index}].content") from None
        drafts.append(MessageDraft(content=content, role=role))
    return drafts


def _request_tokens(message: dict[str, Any]) -> int:
    text = text_of(message.get("content"))
    extra = message.get("tool_calls")
    return (
        MESSAGE_OVERHEAD_TOKENS
        + approximate_tokens(text)
        + (approximate_tokens(json.dumps(extra)) if extra else 0)
    )


def _trimmed(history: list[ChatMessage], max_history: int, budget: int) -> list[ChatMessage] | None:
    """The last `max_history` messages, the oldest dropped until they fit `budget`; None if nothing could fit
    the request itself."""
    if budget < 0:
        return None
    kept = history[-max_history:] if max_history > 0 else []
    total = sum(message_tokens(m) for m in kept)
    while kept and total > budget:
        total -= message_tokens(kept.pop(0))
    return kept
