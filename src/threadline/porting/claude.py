"""The Claude data export: `conversations.json`, an array of `{uuid, name, chat_messages, ...}`.

Messages carry `sender` (human | assistant), `text` and `content` blocks (text, thinking, tool_use,
tool_result). Newer exports link each message to its parent with `parent_message_uuid` (the root's
parent is an all-zero sentinel), which gives branches; older exports have no parent field and are
one linear chain in file order. Content blocks become content parts (parts.model): text, thinking as
reasoning, tool_use as a tool call, tool_result as a tool result; files and attachments become file parts
and stay attachments too (with their extracted text). Empty messages are skipped as ChatGPT's are
(model.skip_empty), and answers take the conversation's model when it names one.
"""

from __future__ import annotations

import json
from typing import Any

from threadline.parts import model as parts
from threadline.porting.chatgpt import UNTITLED
from threadline.porting.model import (
    ImportedConversation,
    ImportedMessage,
    ImportFormat,
    Rejected,
    array,
    from_iso,
    settle_parents,
    skip_empty,
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
    for message in messages:
        if message.role == "ASSISTANT":
            message.model = conversation.model
    conversation.messages = skip_empty(messages, conversation.warnings)
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
    found: list[parts.Part] = []
    attachments: list[dict[str, Any]] = []
    blocks = array(entry.get("content"))
    unanswered = _Calls()  # this message's tool calls without a result yet
    for n, block in enumerate(blocks):
        if not isinstance(block, dict):
            continue
        part = _block_part(key, n, block, unanswered)
        if part is not None:
            found.append(part)
        elif (text(block.get("type")) or "unknown") != "text":
            attachments.append({"type": text(block.get("type")) or "unknown", "data": block})
    if not any(p["type"] == "text" for p in found):
        # Older exports, and blocks without text: the flat `text` field is the message.
        flat = text(entry.get("text")) or ""
        if flat:
            found.append(parts.text_part(flat))
    for item in _listed(entry, "attachments", key, conversation.warnings):
        if isinstance(item, dict):
            if text(item.get("file_name")):
                found.append(
                    parts.file_part(name=str(item["file_name"]), mime_type=text(item.get("file_type")))
                )
            attachments.append(
                {
                    "type": "file",
                    "filename": text(item.get("file_name")),
                    "size_bytes": _size(item.get("file_size")),
                    "mime_type": text(item.get("file_type")),
                    "extracted_content": text(item.get("extracted_content")),
                }
            )
    for item in _listed(entry, "files", key, conversation.warnings):
        if isinstance(item, dict):
            attachments.append({"type": "file", "filename": text(item.get("file_name"))})
            if text(item.get("file_name")):
                found.append(parts.file_part(name=str(item["file_name"])))
    plain = parts.is_plain_text(found)
    return ImportedMessage(
        key=key,
        parent_key=None,
        role=role,
        content=found[0]["text"] if plain and found else parts.text_projection(found),
        created_at=from_iso(entry.get("created_at")),
        attachments=attachments,
        parts=None if plain else found,
    )


def _listed(entry: dict[str, Any], field: str, key: str, warnings: list[str]) -> list[Any]:
    """A message's array field; anything else is ignored with a warning (a number or true there failed the whole
    conversation with a TypeError)."""
    value = entry.get(field)
    if value is not None and not isinstance(value, list):
        warnings.append(f"message {key}: `{field}` is not an array, ignored")
    return array(value)


def _size(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _block_part(key: str, index: int, block: dict[str, Any], unanswered: _Calls) -> parts.Part | None:
    """The content part of one content block; None for an empty or unknown one."""
    kind = text(block.get("type"))
    if kind == "text":
        return parts.text_part(str(block["text"])) if text(block.get("text")) else None
    if kind == "thinking":
        thinking = text(block.get("thinking")) or ""
        return parts.reasoning_part(thinking) if thinking.strip() else None
    if kind == "tool_use":
        call = parts.tool_call_part(
            id=text(block.get("id")) or f"{key}#{index}",
            name=text(block.get("name")) or "tool",
            arguments=json.dumps(block.get("input") if block.get("input") is not None else {}),
        )
        unanswered.add(call)
        return call
    if kind == "tool_result":
        return parts.tool_result_part(
            tool_call_id=text(block.get("tool_use_id"))
            or unanswered.answered(text(block.get("name")))
            or f"{key}#{index}",
            content=_result_text(block.get("content")),
            is_error=block.get("is_error") is True,
        )
    return None


class _Calls:
    """A message's tool calls not answered yet, for its results without `tool_use_id` (claude.ai's export names
    neither id; its blocks carry the tool's name): an empty id refused every part of the message, so its tool calls
    were lost. Each call is taken once, in constant time: looking through them for each result, k calls and k
    results of other names cost k * k steps."""

    def __init__(self) -> None:
        self._latest: list[parts.Part] = []
        self._by_name: dict[str, list[parts.Part]] = {}
        self._taken: set[int] = set()  # id() of the calls answered

    def add(self, call: parts.Part) -> None:
        self._latest.append(call)
        self._by_name.setdefault(str(call["name"]), []).append(call)

    def answered(self, name: str | None) -> str | None:
        """The id of the latest unanswered call of `name`, else of the latest unanswered call; None if none."""
        for calls in (self._by_name.get(name, []) if name is not None else [], self._latest):
            while calls:
                call = calls.pop()
                if id(call) not in self._taken:
                    self._taken.add(id(call))
                    return str(call["id"])
        return None


def _result_text(content: Any) -> str:
    """A tool result's content: a string, or a list of blocks whose text is joined."""
    if isinstance(content, str):
        return content
    pieces = [str(b["text"]) for b in array(content) if isinstance(b, dict) and text(b.get("text"))]
    return "\n\n".join(pieces)
