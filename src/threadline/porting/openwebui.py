"""Open WebUI's chat export ("Export All Chats", or one chat's "Export chat (.json)"): an array of chats.

A chat: `{id, user_id, title, chat {title, models, history {messages, currentId}, messages, tags, ...},
created_at, updated_at (Unix seconds), archived, pinned, meta {tags}, folder_id}`. `chat.history.messages`
maps each message id to `{id, parentId, childrenIds, role, content, model, timestamp, files, usage,
annotation, output}`: every branch (edits, regenerations, several models answering one question) with
`childrenIds` in branch order; `currentId` is the message the user was on (kept as the importing owner's
current branch). Older chats have only the flat `chat.messages` list of the same objects.

Reasoning comes either in `output` items (`reasoning`, `message`, `function_call`, `function_call_output`)
or inline in `content` as `<details type="reasoning">` blocks; tool calls as `<details type="tool_calls"
name=... arguments=... result=...>` blocks. Both become content parts (reasoning, tool call, tool result);
files become image and file parts. Empty messages (an answer stopped before its first token) are left out.
"""

from __future__ import annotations

import html
import json
import re
from datetime import UTC, datetime
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
    in_range,
    obj,
    text,
)

ROLES = {"user": "USER", "assistant": "ASSISTANT", "system": "SYSTEM", "tool": "TOOL"}
# A name, and its quoted value when it has one: each name is read whole once (`name="value"` alone was tried again
# from each letter of a long name without a value: `<details` and 40,000 letters took 10 s, 1 MB hours).
_ATTRIBUTE = re.compile(r'([a-zA-Z_][\w-]*)(?:="([^"]*)")?')
_SUMMARY = re.compile(r"^\s*<summary>.*?</summary>\s*", re.S)
_URL_MAX_CHARS = 8192
_INT_MAX = 2**31 - 1


def parse(value: Any) -> ImportedConversation:
    if not isinstance(value, dict):
        raise Rejected(f"an Open WebUI chat must be a JSON object, not {type(value).__name__}")
    chat = value.get("chat")
    if not isinstance(chat, dict):
        names = ", ".join(sorted(str(k) for k in value)[:8])
        raise Rejected(f"not an Open WebUI chat: it has no `chat` object (keys: {names})")
    external_id = text(value.get("id")) or text(chat.get("id"))
    if not external_id:
        raise Rejected("not an Open WebUI chat: it has no id")
    models = [m for m in array(chat.get("models")) if isinstance(m, str) and m]
    meta = obj(value.get("meta"))
    tags = [t for t in array(meta.get("tags")) or array(chat.get("tags")) if isinstance(t, str)]
    conversation = ImportedConversation(
        source=ImportFormat.OPENWEBUI,
        external_id=external_id,
        title=(text(value.get("title")) or text(chat.get("title")) or "").strip() or UNTITLED,
        messages=[],
        tags=tags,
        model=models[0] if models else None,
        status="ARCHIVED" if value.get("archived") is True else "ACTIVE",
        created_at=from_epoch(value.get("created_at")),
        updated_at=from_epoch(value.get("updated_at")),
    )
    raw, current = _history(chat, conversation.warnings)
    if raw is None:
        conversation.warnings.append("the chat has no history: imported without messages")
        return conversation
    keys: list[str] = []
    kept: dict[str, ImportedMessage | None] = {}
    claimed: dict[str, str | None] = {}
    listed: dict[str, list[str]] = {}
    for key, entry in raw:
        if key in kept:
            conversation.warnings.append(f"message {key}: duplicate id, the later one was skipped")
            continue
        keys.append(key)
        kept[key] = _message(key, entry, conversation)
        parent = entry.get("parentId")
        claimed[key] = parent if isinstance(parent, str) and parent else None
        listed[key] = [c for c in array(entry.get("childrenIds")) if isinstance(c, str)]
    arranged = arrange(
        keys, kept, claimed, conversation.warnings, order=lambda k: listed.get(k, []), current=current
    )
    conversation.messages = arranged.messages
    conversation.current_key = arranged.current_key
    return conversation


def _history(
    chat: dict[str, Any], warnings: list[str]
) -> tuple[list[tuple[str, dict[str, Any]]] | None, str | None]:
    """(id, message) pairs of the chat, and its current message id."""
    history = chat.get("history")
    if history is not None and not isinstance(history, dict):
        raise Rejected("`chat.history` must be an object")
    history = history or {}
    messages = history.get("messages")
    current = text(history.get("currentId"))
    if isinstance(messages, dict):
        pairs = [(str(k), m) for k, m in messages.items() if isinstance(m, dict)]
        if len(pairs) != len(messages):
            warnings.append(f"{len(messages) - len(pairs)} history.messages entries are not objects, skipped")
        return pairs, current
    if messages is not None:
        raise Rejected("`chat.history.messages` must be an object of messages by id")
    flat = chat.get("messages")
    if flat is None:
        return None, current
    if not isinstance(flat, list):
        raise Rejected("`chat.messages` must be an array")
    pairs = []
    previous: str | None = None
    for index, m in enumerate(flat):
        if not isinstance(m, dict):
            warnings.append(f"chat.messages[{index}] is not an object, skipped")
            continue
        key = text(m.get("id")) or f"#{index}"
        if "parentId" not in m:
            # The oldest chats: a linear list without parent links.
            m = {**m, "parentId": previous}
        pairs.append((key, m))
        previous = key
    return pairs, current


def _message(key: str, entry: dict[str, Any], conversation: ImportedConversation) -> ImportedMessage | None:
    source_role = text(entry.get("role")) or ""
    role = ROLES.get(source_role)
    if role is None:
        conversation.warnings.append(f"message {key}: unknown role {source_role!r}, imported as tool")
        role = "TOOL"
    found: list[parts.Part] = []
    attachments: list[dict[str, Any]] = []
    output = entry.get("output")
    if isinstance(output, list) and output:
        _output_parts(key, output, found)
    else:
        _content_parts(key, entry.get("content"), found, conversation.warnings)
    for item in array(entry.get("files")):
        if isinstance(item, dict):
            _file(key, item, found, attachments, conversation.warnings)
    if not found and not attachments:
        return None
    usage = obj(entry.get("usage")) or obj(entry.get("info"))
    plain = parts.is_plain_text(found)
    return ImportedMessage(
        key=key,
        parent_key=None,
        role=role,
        content=(found[0]["text"] if found else "") if plain else parts.text_projection(found),
        created_at=from_epoch(entry.get("timestamp")),
        model=text(entry.get("model")) or (conversation.model if role == "ASSISTANT" else None),
        prompt_tokens=_count(usage.get("prompt_tokens", usage.get("prompt_eval_count"))),
        completion_tokens=_count(usage.get("completion_tokens", usage.get("eval_count"))),
        attachments=attachments,
        feedback=_feedback(entry.get("annotation")),
        parts=None if plain else found,
    )


def _output_parts(key: str, output: list[Any], found: list[parts.Part]) -> None:
    """Newer Open WebUI keeps an answer's steps as Responses-API items."""
    for n, item in enumerate(output):
        if not isinstance(item, dict):
            continue
        kind = text(item.get("type"))
        if kind == "reasoning":
            thought = _joined(item.get("summary")) or _joined(item.get("content"))
            if thought.strip():
                found.append(parts.reasoning_part(thought))
        elif kind == "message":
            said = _joined(item.get("content"))
            if said.strip():
                found.append(parts.text_part(said))
        elif kind == "function_call":
            arguments = item.get("arguments")
            found.append(
                parts.tool_call_part(
                    id=text(item.get("call_id")) or text(item.get("id")) or f"{key}#{n}",
                    name=text(item.get("name")) or "tool",
                    arguments=arguments if isinstance(arguments, str) else json.dumps(arguments or {}),
                )
            )
        elif kind == "function_call_output":
            found.append(
                parts.tool_result_part(
                    tool_call_id=text(item.get("call_id")) or "",
                    content=_joined(item.get("output")),
                )
            )


def _joined(value: Any) -> str:
    """Text of a string or a list of `{type, text}` items (output_text, input_text, summary_text)."""
    if isinstance(value, str):
        return value
    pieces = [
        item if isinstance(item, str) else text(item.get("text")) or ""
        for item in array(value)
        if isinstance(item, str | dict)
    ]
    return "\n\n".join(p for p in pieces if p)


def _content_parts(key: str, content: Any, found: list[parts.Part], warnings: list[str]) -> None:
    if isinstance(content, list):
        content = _joined(content)  # a few versions kept OpenAI-style content lists
    if content is None:
        return
    if not isinstance(content, str):
        warnings.append(f"message {key}: `content` is not text, ignored")
        return
    # `<details type=...>` blocks in the text: reasoning and tool calls, cut out of the visible text.
    # Found with str.find (a close tag is looked for once from each open tag, and the search stops at the
    # first open tag with no close after it): linear in the text, whatever it holds.
    position = 0
    pending = ""  # text (other <details> blocks included) not yet made a part
    while True:
        start = content.find("<details", position)
        end = content.find("</details>", start) if start >= 0 else -1
        if start < 0 or end < 0:
            break
        close = end + len("</details>")
        head_end = content.find(">", start, end)
        attributes = _attributes(content[start:head_end]) if head_end >= 0 else {}
        kind = attributes.get("type")
        if kind not in ("reasoning", "tool_calls"):
            pending += content[position:close]
            position = close
            continue
        _add_text(pending + content[position:start], found)
        pending = ""
        body = content[head_end + 1 : end]
        if kind == "reasoning":
            thought = _unquoted(html.unescape(_SUMMARY.sub("", body, count=1)))
            if thought.strip():
                found.append(parts.reasoning_part(thought))
        else:
            call_id = html.unescape(attributes.get("id", "")) or f"{key}#{len(found)}"
            found.append(
                parts.tool_call_part(
                    id=call_id,
                    name=html.unescape(attributes.get("name", "")) or "tool",
                    arguments=html.unescape(attributes.get("arguments", "")) or "{}",
                )
            )
            if "result" in attributes:
                found.append(
                    parts.tool_result_part(tool_call_id=call_id, content=_result(attributes["result"]))
                )
        position = close
    _add_text(pending + content[position:], found)


def _attributes(head: str) -> dict[str, str]:
    return {m[1]: m[2] for m in _ATTRIBUTE.finditer(head) if m[2] is not None}


def _add_text(value: str, found: list[parts.Part]) -> None:
    if value.strip():
        found.append(parts.text_part(value.strip("\n")))


def _unquoted(body: str) -> str:
    """Reasoning as Open WebUI shows it: a Markdown quote (`> ` on each line)."""
    lines = [
        line[2:] if line.startswith("> ") else line[1:] if line.startswith(">") else line
        for line in body.strip().splitlines()
    ]
    return "\n".join(lines)


def _result(raw: str) -> str:
    """A tool result attribute: HTML-escaped JSON (a string result is JSON-quoted)."""
    value = html.unescape(raw)
    try:
        decoded = json.loads(value)
    except (ValueError, RecursionError):  # nested past the decoder's recursion: kept as the text it is
        return value
    return decoded if isinstance(decoded, str) else json.dumps(decoded)


def _file(
    key: str,
    item: dict[str, Any],
    found: list[parts.Part],
    attachments: list[dict[str, Any]],
    warnings: list[str],
) -> None:
    kind = text(item.get("type")) or "file"
    url = text(item.get("url"))
    name = text(item.get("name")) or text(obj(item.get("file")).get("filename"))
    mime = text(item.get("content_type")) or text(obj(obj(item.get("file")).get("meta")).get("content_type"))
    if url and len(url) > _URL_MAX_CHARS:
        # An image pasted inline (a data: URL) can be megabytes: said, not stored as a part.
        warnings.append(f"message {key}: an inline {kind} of {len(url)} characters was not kept")
        attachments.append({"type": kind, "name": name, "inline_chars": len(url)})
        return
    if kind == "image" and url:
        found.append(parts.image_part(url=url, mime_type=mime))
    elif name:
        found.append(parts.file_part(name=name, url=url, mime_type=mime))
    size = item.get("size")
    attachments.append(
        {
            "type": "image" if kind == "image" else "file",
            "filename": name,
            "file_id": text(item.get("id")),
            "mime_type": mime,
            "pointer": url,
            "size_bytes": size if isinstance(size, int) and not isinstance(size, bool) else None,
        }
    )


def _feedback(annotation: Any) -> dict[str, Any] | None:
    """Open WebUI's rating (1 or -1, a reason, a comment) as the exporting user's feedback."""
    if not isinstance(annotation, dict) or annotation.get("rating") not in (1, -1):
        return None
    reason = text(annotation.get("reason"))
    return {
        "rating": "UP" if annotation["rating"] == 1 else "DOWN",
        "reasons": [reason] if reason else [],
        "comment": text(annotation.get("comment")) or "",
    }


def from_epoch(value: Any) -> datetime | None:
    """Unix seconds, or milliseconds (some Open WebUI fields), as an aware datetime; None if absent or bad."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    seconds = value / 1000 if abs(value) > 1e11 else value
    try:
        return in_range(datetime.fromtimestamp(float(seconds), tz=UTC))
    except (OverflowError, OSError, ValueError):
        return None


def _count(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _INT_MAX:
        return None
    return value
