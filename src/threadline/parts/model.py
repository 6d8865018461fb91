"""Message content parts: what a message holds besides plain text (images, files, tool calls and results,
reasoning), as stored in `message.parts` and validated on the way in.

A message whose only content is text stores no parts (NULL): `Message.parts` then answers one text part made
of `content`. Otherwise `parts` holds the whole list in order and `content` holds its plain-text projection
(`text_projection`), which search indexes and which runs read as the message's text. Reasoning parts are left
out of the projection, so a model never reads an earlier answer's reasoning unless asked to.

The gateway (issue 17 item 3) and the porting modules build parts with the constructors here and store them
with `threads.service` (`MessageDraft.parts`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

from threadline.errors import bad_input
from threadline.settings import Settings

PartType = Literal["text", "image", "file", "tool_call", "tool_result", "reasoning"]
PART_TYPES: tuple[PartType, ...] = ("text", "image", "file", "tool_call", "tool_result", "reasoning")

# A stored part is a JSON object with `type` and the fields of its kind (snake_case, None left out).
Part = dict[str, Any]

# Bounds of each string field of a part (the message's whole byte limit applies too).
_ID_MAX_CHARS = 256
_NAME_MAX_CHARS = 256
_URL_MAX_CHARS = 8192
_MIME_MAX_CHARS = 128
_SCRIPT_SCHEMES = ("javascript:", "vbscript:")


def text_part(text: str) -> Part:
    return {"type": "text", "text": text}


def image_part(*, url: str | None = None, file_id: str | None = None, mime_type: str | None = None) -> Part:
    """An image by URL or by a stored file's id (opaque: the file store resolves it)."""
    return _without_none({"type": "image", "url": url, "file_id": file_id, "mime_type": mime_type})


def file_part(
    *, name: str, file_id: str | None = None, url: str | None = None, mime_type: str | None = None
) -> Part:
    return _without_none(
        {"type": "file", "name": name, "file_id": file_id, "url": url, "mime_type": mime_type}
    )


def tool_call_part(*, id: str, name: str, arguments: str) -> Part:
    """A call the model made: `arguments` is the JSON text the model wrote (kept as written)."""
    return {"type": "tool_call", "id": id, "name": name, "arguments": arguments}


def tool_result_part(*, tool_call_id: str, content: str, is_error: bool = False) -> Part:
    return {"type": "tool_result", "tool_call_id": tool_call_id, "content": content, "is_error": is_error}


def reasoning_part(text: str) -> Part:
    """A model's thinking before its answer: shown, but not fed back into runs' context."""
    return {"type": "reasoning", "text": text}


def _without_none(part: dict[str, Any]) -> Part:
    return {k: v for k, v in part.items() if v is not None}


def text_projection(parts: list[Part]) -> str:
    """The plain text of parts: text parts and tool results' content, in order, one blank line apart."""
    texts = [
        p["text"] if p["type"] == "text" else p["content"]
        for p in parts
        if p["type"] in ("text", "tool_result")
    ]
    return "\n\n".join(t for t in texts if t)


def is_plain_text(parts: list[Part]) -> bool:
    """Parts that `content` alone says (at most one text part): nothing to store besides it."""
    return len(parts) <= 1 and all(p["type"] == "text" for p in parts)


def tool_calls(parts: list[Part] | None) -> list[Part]:
    return [p for p in parts or [] if p["type"] == "tool_call"]


def parts_or_text(parts: list[Part] | None, content: str) -> list[Part]:
    """A message's parts as `Message.parts` answers them: the stored ones, or its text as one part."""
    if parts is not None:
        return parts
    return [text_part(content)] if content else []


def with_text(parts: list[Part], text: str) -> list[Part]:
    """`parts` after an edit to `text`: everything `text_projection` reads (text parts and tool results' content)
    replaced, nothing of the earlier text kept. Where the first of those was, `text`: as a text part, or as that
    tool result's content (its call id and error flag stay); other text parts go, other tool results stay with an
    empty content. With none, `text` is a text part first. Other parts (calls, images, files, reasoning) stay.
    (Tool results kept their content before: the edited-away text stayed in `Message.parts` and in the context
    of later runs.)"""
    edited: list[Part] = []
    placed = False
    for part in parts:
        kind = part["type"]
        if kind == "text":
            if not placed:
                edited.append(text_part(text))
                placed = True
        elif kind == "tool_result":
            edited.append({**part, "content": "" if placed else text})
            placed = True
        else:
            edited.append(part)
    return edited if placed else [text_part(text), *edited]


def validate_parts(parts: list[Part], settings: Settings) -> list[Part]:
    """Bounded input: at most `message_max_parts` parts, the message's byte limit over all their strings,
    tool-call arguments valid JSON nested at most `message_part_max_depth` levels, no NUL characters."""
    if len(parts) > settings.message_max_parts:
        raise bad_input(
            f"a message holds at most {settings.message_max_parts} parts",
            argument="parts",
            limit=settings.message_max_parts,
        )
    size = 0
    for index, part in enumerate(parts):
        if part.get("type") not in PART_TYPES:
            raise bad_input(f"parts[{index}] has an unknown type", argument="parts")
        for key, value in part.items():
            if isinstance(value, str):
                if "\x00" in value:
                    raise bad_input(f"parts[{index}].{key} must not contain NUL characters", argument="parts")
                size += len(value.encode("utf-8", errors="surrogatepass"))
        _check_fields(index, part, settings)
    if size > settings.message_max_bytes:
        raise bad_input(
            f"parts are {size} bytes; the limit is {settings.message_max_bytes} bytes",
            argument="parts",
            limit=settings.message_max_bytes,
        )
    return parts


def _check_fields(index: int, part: Part, settings: Settings) -> None:
    kind = part["type"]
    where = f"parts[{index}]"
    if kind in ("text", "reasoning") and not part.get("text", "").strip():
        raise bad_input(f"{where}.text must not be empty", argument="parts")
    if kind == "image" and bool(part.get("url")) == bool(part.get("file_id")):
        raise bad_input(f"{where}: an image has either a url or a fileId", argument="parts")
    url = part.get("url")
    if isinstance(url, str) and url.strip().lower().startswith(_SCRIPT_SCHEMES):
        # Clients render these as links and images: a script URL would run in the reader's page.
        raise bad_input(f"{where}.url must not be a script URL", argument="parts")
    if kind == "file" and not part.get("name", "").strip():
        raise bad_input(f"{where}.name must not be empty", argument="parts")
    if kind == "tool_call":
        if not part.get("id") or not part.get("name"):
            raise bad_input(f"{where}: a tool call needs an id and a name", argument="parts")
        _check_arguments(where, part.get("arguments", ""), settings.message_part_max_depth)
    if kind == "tool_result" and not part.get("tool_call_id"):
        raise bad_input(f"{where}.toolCallId must not be empty", argument="parts")
    for key, limit in (
        ("id", _ID_MAX_CHARS),
        ("tool_call_id", _ID_MAX_CHARS),
        ("file_id", _ID_MAX_CHARS),
        ("name", _NAME_MAX_CHARS),
        ("url", _URL_MAX_CHARS),
        ("mime_type", _MIME_MAX_CHARS),
    ):
        value = part.get(key)
        if isinstance(value, str) and len(value) > limit:
            raise bad_input(f"{where}.{key} is limited to {limit} characters", argument="parts", limit=limit)


def _check_arguments(where: str, arguments: str, max_depth: int) -> None:
    # Nesting is checked on the text before parsing: json.loads recurses, so a deep document is refused first.
    depth = deepest = 0
    in_string = escaped = False
    for ch in arguments:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    if deepest > max_depth:
        raise bad_input(
            f"{where}.arguments nest {deepest} levels; the limit is {max_depth}",
            argument="parts",
            limit=max_depth,
        )
    try:
        json.loads(arguments)
    except ValueError:
        raise bad_input(f"{where}.arguments must be JSON text", argument="parts") from None


@dataclass(frozen=True)
class StoredParts:
    """What to write for a message: `parts` (None for plain text) and the `content` projection."""

    parts: list[Part] | None
    content: str


def for_storage(parts: list[Part], content: str | None = None) -> StoredParts:
    """`content` given by the client wins as the projection (what search finds); else it is computed."""
    if is_plain_text(parts):
        return StoredParts(None, parts[0]["text"] if parts else (content or ""))
    return StoredParts(parts, content if content else text_projection(parts))
