"""Between OpenAI chat messages and stored messages with their content parts (threadline.parts).

Stored from a request: a user message's text and images (by http(s) URL) as parts, a tool message as a
tool-result part (its `tool_call_id` kept), an assistant message as text. Stored from the model: its text, and
its tool calls as tool-call parts. Sent from the branch: an assistant message with tool-call parts carries its
`tool_calls`, a tool message with a tool-result part goes back as `{"role": "tool", "tool_call_id", "content"}`,
so a client can continue a tool round by sending the results alone. Everything else is sent as text, as runs
send it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from threadline.errors import ThreadlineError, bad_input
from threadline.gateway.completion import Choice
from threadline.gateway.request import text_of
from threadline.parts import model as parts
from threadline.runs.context import MESSAGE_OVERHEAD_TOKENS, approximate_tokens
from threadline.settings import Settings
from threadline.threads.service import MessageDraft, validate_content

log = logging.getLogger(__name__)

# How stored roles are sent (as runs send them: a tool result without its call id is user text).
SENT_ROLES = {"USER": "user", "TOOL": "user", "ASSISTANT": "assistant", "SYSTEM": "system"}
STORED_ROLES = {"user": "USER", "tool": "TOOL", "function": "TOOL", "assistant": "ASSISTANT"}
IMAGE_URL_SCHEMES = ("http://", "https://")
IMAGE_URL_MAX_CHARS = 8192


def draft_of(index: int, message: dict[str, Any], settings: Settings) -> MessageDraft | None:
    """The stored form of request message `index` (None for roles that are sent, not kept); 400 when it
    cannot be stored (empty, too big, NUL)."""
    role = STORED_ROLES.get(message["role"])
    if role is None:
        return None
    content = text_of(message.get("content"))
    found: list[parts.Part] = []
    if role == "TOOL" and isinstance(message.get("tool_call_id"), str):
        found = [parts.tool_result_part(tool_call_id=message["tool_call_id"], content=content)]
    elif role == "USER" and isinstance(message.get("content"), list):
        found = _user_parts(message["content"])
        content = parts.text_projection(found) or content
    draft = MessageDraft(content=content, role=role, parts=found or None)
    try:
        if draft.parts is not None:
            parts.validate_parts(draft.parts, settings)
            stored = parts.for_storage(draft.parts, draft.content)
            draft = replace(draft, content=stored.content, parts=stored.parts)
        validate_content(draft.content, settings)
    except ThreadlineError as exc:
        raise bad_input(f"messages[{index}]: {exc.message}", param=f"messages[{index}].content") from None
    return draft


def _user_parts(content: list[dict[str, Any]]) -> list[parts.Part]:
    out: list[parts.Part] = []
    for item in content:
        kind = item.get("type")
        if kind in ("text", "input_text") and isinstance(item.get("text"), str) and item["text"].strip():
            out.append(parts.text_part(item["text"]))
        elif kind == "image_url" and isinstance(item.get("image_url"), dict):
            url = item["image_url"].get("url")
            # Inline (data:) images are not kept: they would be stored as text in the message row.
            if isinstance(url, str) and url.startswith(IMAGE_URL_SCHEMES) and len(url) <= IMAGE_URL_MAX_CHARS:
                out.append(parts.image_part(url=url))
    return out


def reply_parts(choice: Choice, settings: Settings) -> list[parts.Part] | None:
    """The parts of the model's reply: None when it is plain text (or its tool calls cannot be kept)."""
    calls = [
        parts.tool_call_part(id=c["id"], name=c["function"]["name"], arguments=c["function"]["arguments"])
        for c in (choice.tool_calls[i] for i in sorted(choice.tool_calls))
    ]
    if not calls:
        return None
    text = "".join(choice.content)
    found = [*([parts.text_part(text)] if text.strip() else []), *calls]
    try:
        return parts.validate_parts(found, settings)
    except ThreadlineError as exc:  # arguments that are not JSON, say: the text is kept, the calls are not
        log.warning("gateway: the reply's tool calls are not kept: %s", exc.message)
        return None


def sent_message(row: Mapping[str, Any], stored: list[parts.Part] | None) -> dict[str, Any] | None:
    """A branch message as the model is sent it; None for one with nothing to send (a tombstone, empty)."""
    if row["deleted_at"] is not None:
        return None
    calls = parts.tool_calls(stored)
    if row["role"] == "ASSISTANT" and calls:
        return {
            "role": "assistant",
            "content": row["content"] or None,
            "tool_calls": [
                {
                    "id": c["id"],
                    "type": "function",
                    "function": {"name": c["name"], "arguments": c["arguments"]},
                }
                for c in calls
            ],
        }
    results = [p for p in stored or [] if p["type"] == "tool_result"]
    if row["role"] == "TOOL" and len(results) == 1:
        return {"role": "tool", "tool_call_id": results[0]["tool_call_id"], "content": row["content"]}
    if not row["content"]:
        return None
    return {"role": SENT_ROLES[row["role"]], "content": row["content"]}


def tokens(message: dict[str, Any]) -> int:
    """The approximate prompt cost of a message (as runs count it), tool calls included."""
    cost = MESSAGE_OVERHEAD_TOKENS + approximate_tokens(text_of(message.get("content")))
    if message.get("tool_calls"):
        cost += approximate_tokens(json.dumps(message["tool_calls"]))
    return cost
