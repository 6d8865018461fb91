"""LibreChat's conversation export (the JSON of "Export conversation"): one conversation per file.

`{conversationId, endpoint, title, exportAt, branches, recursive, options {model, promptPrefix, ...},
messages}`. With `recursive: true` (the "tree" export) `messages` holds the roots and each message its
replies in `children`; otherwise it is a flat list where each message names its parent in
`parentMessageId` (the all-zero id for a root). LibreChat's own importer also reads `messagesTree`.

A message: `messageId`, `parentMessageId`, `sender` (a label: "User", "GPT-4", an assistant's name),
`isCreatedByUser`, `text`, and for agents and assistants `content` parts (text, think, tool_call,
image_file, image_url, error), `files` the user attached, `model`, `createdAt`, `updatedAt`, `isEdited`,
`tokenCount` and `promptTokens`. Edits and regenerations are siblings (all kept); `think` parts become
reasoning parts, tool calls a tool call and its result, images image parts. Messages with nothing in them
are left out, their replies moved up (message_tree). The export does not say which branch was open.
"""

from __future__ import annotations

import json
from typing import Any

from threadline.parts import model as parts
from threadline.porting.chatgpt import UNTITLED
from threadline.porting.message_tree import arrange
from threadline.porting.model import (
    ImportedConversation,
    ImportedMessage,
    ImportFormat,
    Rejected,
    array,
    from_iso,
    obj,
    text,
)

NO_PARENT = "00000000-0000-0000-0000-000000000000"
# LibreChat endpoints as Threadline's ai_provider (others, custom endpoints included, as they are named).
PROVIDERS = {
    "openAI": "openai",
    "azureOpenAI": "azure-openai",
    "assistants": "openai",
    "azureAssistants": "azure-openai",
    "anthropic": "anthropic",
    "google": "google",
    "bedrock": "bedrock",
    "agents": "librechat-agents",
}
_INT_MAX = 2**31 - 1


def parse(value: Any) -> ImportedConversation:
    if not isinstance(value, dict):
        raise Rejected(f"a LibreChat export must be a JSON object, not {type(value).__name__}")
    external_id = text(value.get("conversationId"))
    if not external_id:
        names = ", ".join(sorted(str(k) for k in value)[:8])
        raise Rejected(f"not a LibreChat conversation: it has no conversationId (keys: {names})")
    options = obj(value.get("options"))
    endpoint = text(value.get("endpoint")) or text(options.get("endpoint"))
    conversation = ImportedConversation(
        source=ImportFormat.LIBRECHAT,
        external_id=external_id,
        title=(text(value.get("title")) or text(options.get("title")) or "").strip() or UNTITLED,
        messages=[],
        ai_provider=PROVIDERS.get(endpoint, endpoint.lower()) if endpoint else None,
        model=text(options.get("model")),
    )
    metadata = {
        "endpoint": endpoint,
        "label": text(options.get("chatGptLabel")) or text(options.get("modelLabel")),
        "instructions": text(options.get("promptPrefix")),
    }
    conversation.metadata = {k: v for k, v in metadata.items() if v} or None
    raw = value.get("messagesTree", value.get("messages"))
    if raw is None:
        conversation.warnings.append("the export has no messages: imported without messages")
        return conversation
    if not isinstance(raw, list):
        raise Rejected("`messages` must be an array")
    tree = value.get("recursive") is True or "messagesTree" in value
    entries = _flatten(raw, conversation.warnings) if tree else _entries(raw, conversation.warnings)
    keys: list[str] = []
    guessed: list[str] = []
    kept: dict[str, ImportedMessage | None] = {}
    claimed: dict[str, str | None] = {}
    for index, (entry, parent) in enumerate(entries):
        key = text(entry.get("messageId"))
        if not key:
            key = f"#{index}"
            conversation.warnings.append(f"messages[{index}] has no messageId")
        if key in kept:
            conversation.warnings.append(f"message {key}: duplicate id, the later one was skipped")
            continue
        keys.append(key)
        kept[key] = _message(key, entry, conversation, guessed)
        claimed[key] = parent if tree else _parent_of(entry)
    if guessed:
        # Said once for the conversation: an older export lacks the field on every message.
        conversation.warnings.append(
            f"{len(guessed)} message(s) without a boolean isCreatedByUser: the role was taken from sender "
            f"(User or not): {', '.join(guessed[:5])}{', ...' if len(guessed) > 5 else ''}"
        )
    arranged = arrange(keys, kept, claimed, conversation.warnings)
    conversation.messages = arranged.messages
    return conversation


def _entries(raw: list[Any], warnings: list[str]) -> list[tuple[dict[str, Any], str | None]]:
    entries: list[tuple[dict[str, Any], str | None]] = [(m, None) for m in raw if isinstance(m, dict)]
    if len(entries) != len(raw):
        warnings.append(f"{len(raw) - len(entries)} messages entries are not objects, skipped")
    return entries


def _flatten(roots: list[Any], warnings: list[str]) -> list[tuple[dict[str, Any], str | None]]:
    """The tree export's messages, each with the message it is nested in (depth-first, without recursion:
    a file's nesting is only bounded by its size)."""
    out: list[tuple[dict[str, Any], str | None]] = []
    bad = 0
    stack: list[tuple[Any, str | None]] = [(m, None) for m in reversed(roots)]
    while stack:
        entry, parent = stack.pop()
        if not isinstance(entry, dict):
            bad += 1
            continue
        out.append((entry, parent))
        children = entry.get("children")
        if children is None:
            continue
        if not isinstance(children, list):
            warnings.append(f"message {text(entry.get('messageId'))}: `children` is not an array, ignored")
            continue
        key = text(entry.get("messageId")) or f"#{len(out) - 1}"
        stack.extend((child, key) for child in reversed(children))
    if bad:
        warnings.append(f"{bad} messages entries are not objects, skipped")
    return out


def _parent_of(entry: dict[str, Any]) -> str | None:
    parent = text(entry.get("parentMessageId"))
    return None if not parent or parent == NO_PARENT else parent


def _message(
    key: str, entry: dict[str, Any], conversation: ImportedConversation, guessed: list[str]
) -> ImportedMessage | None:
    """The message, or None when it holds nothing (no text, no parts, no files). A message without a boolean
    `isCreatedByUser` is the user's when its `sender` is "User" (its key goes to `guessed`)."""
    by_user = entry.get("isCreatedByUser")
    if not isinstance(by_user, bool):
        by_user = (text(entry.get("sender")) or "").lower() == "user"
        guessed.append(key)
    role = "USER" if by_user else "ASSISTANT"
    found: list[parts.Part] = []
    attachments: list[dict[str, Any]] = []
    content = entry.get("content")
    if isinstance(content, list):
        for n, item in enumerate(content):
            if isinstance(item, dict):
                _content_part(key, n, item, found, attachments)
    elif content is not None and not isinstance(content, str):
        conversation.warnings.append(f"message {key}: `content` is not an array, ignored")
    flat = text(entry.get("text")) or ""
    if entry.get("text") is not None and not isinstance(entry.get("text"), str):
        conversation.warnings.append(f"message {key}: `text` is not a string, ignored")
    if isinstance(content, str) and not flat:
        flat = content
    if flat and not any(p["type"] == "text" for p in found):
        # The text field is the message (older endpoints); with parts, it repeats their text.
        found.insert(sum(1 for p in found if p["type"] == "reasoning"), parts.text_part(flat))
    for item in array(entry.get("files")):
        if isinstance(item, dict):
            _file(item, found, attachments)
    if not found and not attachments:
        return None
    plain = parts.is_plain_text(found)
    edited = entry.get("isEdited") is True
    created = from_iso(entry.get("createdAt"))
    sender = text(entry.get("sender"))
    return ImportedMessage(
        key=key,
        parent_key=None,
        role=role,
        content=(found[0]["text"] if found else "") if plain else parts.text_projection(found),
        created_at=created,
        model=text(entry.get("model")) or (conversation.model if role == "ASSISTANT" else None),
        prompt_tokens=_count(entry.get("promptTokens")) if role == "ASSISTANT" else None,
        completion_tokens=_count(entry.get("tokenCount")) if role == "ASSISTANT" else None,
        attachments=attachments,
        edited_at=(from_iso(entry.get("updatedAt")) or created) if edited else None,
        metadata={"sender": sender} if sender and role == "ASSISTANT" else None,
        parts=None if plain else found,
    )


def _content_part(
    key: str, index: int, item: dict[str, Any], found: list[parts.Part], attachments: list[dict[str, Any]]
) -> None:
    kind = text(item.get("type")) or "unknown"
    if kind == "text":
        value = _text_value(item.get("text"))
        if value.strip():
            found.append(parts.text_part(value))
    elif kind == "think":
        value = _text_value(item.get("think"))
        if value.strip():
            found.append(parts.reasoning_part(value))
    elif kind == "tool_call":
        call = obj(item.get("tool_call"))
        function = obj(call.get("function"))
        call_id = text(call.get("id")) or f"{key}#{index}"
        name = text(call.get("name")) or text(function.get("name")) or text(call.get("type")) or "tool"
        args = call.get("args", function.get("arguments"))
        if args is None and isinstance(call.get("code_interpreter"), dict):
            args = {"code": text(call["code_interpreter"].get("input")) or ""}
        arguments = args if isinstance(args, str) else json.dumps(args if args is not None else {})
        found.append(parts.tool_call_part(id=call_id, name=name, arguments=arguments))
        output = call.get("output", function.get("output"))
        if output is not None:
            result = output if isinstance(output, str) else json.dumps(output)
            found.append(parts.tool_result_part(tool_call_id=call_id, content=result))
    elif kind == "image_url":
        image = item.get("image_url")
        url = image if isinstance(image, str) else text(obj(image).get("url"))
        if url:
            found.append(parts.image_part(url=url))
    elif kind == "image_file":
        image = obj(item.get("image_file"))
        url = text(image.get("filepath"))
        if url:
            found.append(parts.image_part(url=url))
        attachments.append({"type": "image", "file_id": text(image.get("file_id")), "pointer": url})
    elif kind == "error":
        attachments.append({"type": "error", "message": _text_value(item.get("error"))[:2000]})
    else:
        attachments.append({"type": kind})


def _text_value(value: Any) -> str:
    """A part's text: a string, or the `{value, annotations}` object of assistants' text parts."""
    if isinstance(value, str):
        return value
    return text(obj(value).get("value")) or ""


def _file(item: dict[str, Any], found: list[parts.Part], attachments: list[dict[str, Any]]) -> None:
    name = text(item.get("filename"))
    mime = text(item.get("type"))
    url = text(item.get("filepath"))
    if mime and mime.startswith("image/") and url:
        found.append(parts.image_part(url=url, mime_type=mime))
    elif name:
        found.append(parts.file_part(name=name, url=url, mime_type=mime))
    size = item.get("bytes")
    attachments.append(
        {
            "type": "image" if mime and mime.startswith("image/") else "file",
            "filename": name,
            "file_id": text(item.get("file_id")),
            "mime_type": mime,
            "pointer": url,
            "size_bytes": size if isinstance(size, int) and not isinstance(size, bool) else None,
        }
    )


def _count(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _INT_MAX:
        return None
    return value
