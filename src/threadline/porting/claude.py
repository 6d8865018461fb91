"""The Claude data export: `conversations.json`, an array of `{uuid, name, chat_messages, ...}`.

Messages carry `sender` (human | assistant), `text` and `content` blocks (text, thinking, tool_use,
tool_result). Newer exports link each message to its parent with `parent_message_uuid` (the root's
parent is an all-zero sentinel), which gives branches; older exports have no parent field and are
one linear chain in file order. Files and attachments are kept as attachments.
"""

from __future__ import annotations

from typing import Any

from threadline.porting.chatgpt import UNTITLED
from threadline.porting.model import (
    ImportedConversation,
    ImportedMessage,
    ImportFormat,
    Rejected,
    array,
    from_iso,
    settle_parents,
    text,
)

SENDERS = {"human": "USER", "user": "USER", "assistant": "ASSISTANT"}
ROOT_SENTINEL = "00000000-0000-4000-8000-000000000000"


def parse(obj: Any) -> ImportedConversation:
    if not isinstance(obj, dict):
        raise Rejected(f"a Claude conversation must be a JSON object, not {type(obj).__name__}")
    external_id = text(obj.get("uuid"))
    if not external_id:
        keys = ", ".join(sorted(obj)[:8])
        raise Rejected(f"not a Claude conversation: it has no uuid (keys: {keys})")
    conversation = ImportedConversation(
        source=ImportFormat.CLAUDE,
        external_id=external_id,
        title=(text(obj.get("name")) or "").strip() or UNTITLED,
        description=text(obj.get("summary")) or "",
        messages=[],
        ai_provider="anthropic",
        model=text(obj.get("model")),
        created_at=from_iso(obj.get("created_at")),
        updated_at=from_iso(obj.get("updated_at")),
    )
    raw = obj.get("chat_messages")
    if raw is None:
        conversation.warnings.append("the conversation has no chat_messages: imported without messages")
        return conversation
    if not isinstance(raw, list):
        raise Rejected("`chat_messages` must be an array")
    entries = [m for m in raw if isinstance(m, dict)]
    if len(entries) != len(raw):
        conversation.warnings.append(
            f"{len(raw) - len(entries)} chat_messages entries are not objects, skipped"
        )
    linked = any("parent_message_uuid" in m for m in entries)
    messages = [_message(i, m, conversation) for i, m in enumerate(entries)]
    if linked:
        _link(entries, messages, conversation)
        # Oldest first among siblings (a stable sort keeps file order for equal times).
        messages.sort(key=lambda m: (m.created_at is None, m.created_at or 0))
    else:
        for previous, message in zip(messages, messages[1:], strict=False):
            message.parent_key = previous.key
    conversation.messages = messages
    return conversation


def _link(
    entries: list[dict[str, Any]], messages: list[ImportedMessage], conversation: ImportedConversation
) -> None:
    keys = {m.key for m in messages}
    claimed = [(message.key, _parent_of(entry)) for entry, message in zip(entries, messages, strict=True)]
    parents = settle_parents(claimed, keys, "message", conversation.warnings)
    for message in messages:
        message.parent_key = parents[message.key]


def _parent_of(entry: dict[str, Any]) -> str | None:
    parent = text(entry.get("parent_message_uuid"))
    return None if parent == ROOT_SENTINEL or not parent else parent


def _message(index: int, entry: dict[str, Any], conversation: ImportedConversation) -> ImportedMessage:
    key = text(entry.get("uuid"))
    if not key:
        key = f"#{index}"
        conversation.warnings.append(f"chat_messages[{index}] has no uuid")
    sender = text(entry.get("sender")) or ""
    role = SENDERS.get(sender)
    if role is None:
        conversation.warnings.append(f"message {key}: unknown sender {sender!r}, imported as tool")
        role = "TOOL"
    pieces: list[str] = []
    attachments: list[dict[str, Any]] = []
    blocks = array(entry.get("content"))
    for block in blocks:
        if not isinstance(block, dict):
            continue
        kind = text(block.get("type")) or "unknown"
        if kind == "text":
            if text(block.get("text")):
                pieces.append(str(block["text"]))
        elif kind == "thinking":
            attachments.append({"type": "thinking", "text": text(block.get("thinking")) or ""})
        elif kind == "tool_use":
            attachments.append(
                {"type": "tool_use", "name": text(block.get("name")), "input": block.get("input")}
            )
            pieces.append(f"[tool use: {text(block.get('name')) or 'tool'}]")
        elif kind == "tool_result":
            attachments.append(
                {"type": "tool_result", "name": text(block.get("name")), "content": block.get("content")}
            )
            pieces.append(f"[tool result: {text(block.get('name')) or 'tool'}]")
        else:
            attachments.append({"type": kind, "data": block})
    content = "\n\n".join(pieces)
    if not any(isinstance(b, dict) and b.get("type") == "text" and b.get("text") for b in blocks):
        # Older exports, and blocks without text: the flat `text` field is the message.
        flat = text(entry.get("text")) or ""
        content = "\n\n".join(p for p in (flat, content) if p)
    for item in entry.get("attachments") or []:
        if isinstance(item, dict):
            attachments.append(
                {
                    "type": "file",
                    "filename": text(item.get("file_name")),
                    "size_bytes": item.get("file_size") if isinstance(item.get("file_size"), int) else None,
                    "mime_type": text(item.get("file_type")),
                    "extracted_content": text(item.get("extracted_content")),
                }
            )
    for item in entry.get("files") or []:
        if isinstance(item, dict):
            attachments.append({"type": "file", "filename": text(item.get("file_name"))})
    return ImportedMessage(
        key=key,
        parent_key=None,
        role=role,
        content=content,
        created_at=from_iso(entry.get("created_at")),
        attachments=attachments,
    )
