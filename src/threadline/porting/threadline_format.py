"""The Threadline export format (version 1): building documents from rows and reading them back.

A document is `{conversation_id, metadata, conversation, messages, runs, artifacts}`, described by
`threadline-export.schema.json` next to this file. Messages list every branch of every thread:
threads oldest first, each depth-first with siblings oldest first, so a parent always precedes its
replies and the order of siblings is the order of the list. Importing a document and exporting it
again gives the same document apart from ids and `metadata.exported_at`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from threadline.conversations.rules import max_history
from threadline.errors import ThreadlineError
from threadline.ids import Kind, encode_id
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

EXPORT_VERSION = "1.0"
PLATFORM = "threadline"
SCHEMA_FILE = Path(__file__).with_name("threadline-export.schema.json")
ROLES = {"USER", "ASSISTANT", "SYSTEM", "TOOL"}

# A fence's opening line (its info string captured) and its closing line, matched whole.
_OPENING = re.compile(r"[ \t]*```([^\n`]*)")
_CLOSING = re.compile(r"[ \t]*```[ \t]*")
_EXTENSIONS = {
    "python": "py", "py": "py", "javascript": "js", "js": "js", "typescript": "ts", "ts": "ts",
    "tsx": "tsx", "jsx": "jsx", "json": "json", "bash": "sh", "sh": "sh", "shell": "sh", "zsh": "sh",
    "html": "html", "css": "css", "sql": "sql", "go": "go", "rust": "rs", "java": "java", "c": "c",
    "cpp": "cpp", "c++": "cpp", "csharp": "cs", "cs": "cs", "ruby": "rb", "php": "php", "yaml": "yaml",
    "yml": "yaml", "toml": "toml", "markdown": "md", "md": "md", "kotlin": "kt", "swift": "swift",
    "xml": "xml", "dockerfile": "dockerfile", "makefile": "mk", "r": "r", "scala": "scala", "lua": "lua",
}  # fmt: skip
_LANGUAGES = {ext: lang for lang, ext in reversed(list(_EXTENSIONS.items()))}


def iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def message_entry(row: Any, attachments: list[dict[str, Any]]) -> dict[str, Any]:
    # `parts` only for a message that has some (parts.model): a plain-text message is exported as it always was.
    parts = row.get("parts")
    return {
        "id": encode_id(Kind.MESSAGE, row["id"]),
        "parent_id": encode_id(Kind.MESSAGE, row["parent_id"]) if row["parent_id"] else None,
        "role": row["role"].lower(),
        "content": row["content"],
        "timestamp": iso(row["created_at"]),
        "model": row["model"],
        "tokens": {"prompt": row["prompt_tokens"], "completion": row["completion_tokens"]},
        "attachments": attachments,
        "author_id": encode_id(Kind.USER, row["author_id"]) if row["author_id"] else None,
        "edited_at": iso(row["edited_at"]),
        "deleted_at": iso(row["deleted_at"]),
        **({"parts": parts} if parts is not None else {}),
    }


def conversation_entry(row: Any) -> dict[str, Any]:
    return {
        "title": row["title"],
        "description": row["description"],
        "tags": list(row["tags"] or []),
        "status": row["status"].lower(),
        "ai_provider": row["ai_provider"],
        "model": row["model"],
        "session_id": row["session_id"],
        "max_history_messages": row["max_history_messages"],
        "message_count": row["message_count"],
        "token_count": row["token_count"],
        "owner_id": encode_id(Kind.USER, row["owner_id"]) if row["owner_id"] else None,
        "created_at": iso(row["created_at"]),
        "updated_at": iso(row["updated_at"]),
        "last_activity_at": iso(row["last_activity_at"]),
        "metadata": row.get("metadata") or {},
    }


def document(
    conversation: Any, messages: list[dict[str, Any]], runs: list[dict[str, Any]], exported_at: datetime
) -> dict[str, Any]:
    return {
        "conversation_id": encode_id(Kind.CONVERSATION, conversation["id"]),
        "metadata": {"exported_at": iso(exported_at), "export_version": EXPORT_VERSION, "platform": PLATFORM},
        "conversation": conversation_entry(conversation),
        "messages": messages,
        "runs": runs,
        "artifacts": {"code_files": code_files(messages)},
    }


def code_files(messages: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every fenced code block of every message, in message order.

    The fence's info string gives the language (```python) and may name the file (```python app.py,
    or just ```app.py); otherwise files are named snippet-N with the language's extension.
    """
    files: list[dict[str, Any]] = []
    for message in messages:
        for info_string, body in fenced_blocks(message["content"]):
            info = info_string.strip().split()
            language, filename = "", None
            for word in info:
                if "." in word and "/" not in word.strip("./"):
                    filename = word
                elif not language:
                    language = word.lower()
            if filename and not language:
                language = _LANGUAGES.get(filename.rsplit(".", 1)[-1].lower(), "")
            if not filename:
                filename = f"snippet-{len(files) + 1}.{_EXTENSIONS.get(language, 'txt')}"
            files.append(
                {
                    "filename": filename,
                    "language": language or None,
                    "content": body,
                    "message_id": message["id"],
                }
            )
    return files


def fenced_blocks(content: str) -> Iterator[tuple[str, str]]:
    """(info string, text) of each fenced code block: a line of ``` and an info string, the lines up to the next
    line of ``` alone (its text, each line with its newline), in one pass. A regular expression with a lazy body
    looked for a closing line from every opening line: a message of 32,000 lines "```a" (160 kB) took 62 s of the
    server's CPU to export."""
    lines = content.split("\n")
    starts = [0]
    for line in lines:
        starts.append(starts[-1] + len(line) + 1)
    # The first closing line at or after each line (None: no more): an opening without one ends the search, as
    # every later opening has none either.
    closing: list[int | None] = [None] * (len(lines) + 1)
    for n in range(len(lines) - 1, -1, -1):
        closing[n] = n if _CLOSING.fullmatch(lines[n]) else closing[n + 1]
    n = 0
    while n < len(lines) - 1:  # an opening line ends with a newline
        opening = _OPENING.fullmatch(lines[n])
        if opening is None:
            n += 1
            continue
        end = closing[n + 1]
        if end is None:
            return
        yield opening.group(1), content[starts[n + 1] : starts[end]]
        n = end + 1


# -- reading -----------------------------------------------------------------------------------------


def parse(obj: Any) -> list[ImportedConversation]:
    """One export document, or a user export (`{"conversations": [...]}`) holding several."""
    return [parse_document(d) for d in documents(obj)]


def documents(obj: Any) -> list[Any]:
    """The export documents of a file's element: a user export's (`{"conversations": [...]}`), else itself."""
    if isinstance(obj, dict) and isinstance(obj.get("conversations"), list) and "messages" not in obj:
        return list(obj["conversations"])
    return [obj]


def parse_document(doc: Any) -> ImportedConversation:
    if not isinstance(doc, dict):
        raise Rejected(f"a Threadline export must be a JSON object, not {type(doc).__name__}")
    external_id = text(doc.get("conversation_id"))
    if not external_id:
        raise Rejected("not a Threadline export: it has no conversation_id")
    metadata = obj(doc.get("metadata"))
    version = text(metadata.get("export_version")) or ""
    if version.split(".")[0] != EXPORT_VERSION.split(".")[0]:
        raise Rejected(f"unsupported export_version {version!r}: this server reads version {EXPORT_VERSION}")
    conv = doc.get("conversation")
    if not isinstance(conv, dict):
        raise Rejected("`conversation` must be an object")
    raw_messages = doc.get("messages")
    if not isinstance(raw_messages, list):
        raise Rejected("`messages` must be an array")
    status = (text(conv.get("status")) or "active").upper()
    tags = array(conv.get("tags"))
    imported = ImportedConversation(
        source=ImportFormat.THREADLINE,
        external_id=external_id,
        title=text(conv.get("title")) or "Untitled conversation",
        description=text(conv.get("description")) or "",
        tags=[t for t in tags if isinstance(t, str)],
        ai_provider=text(conv.get("ai_provider")),
        model=text(conv.get("model")),
        session_id=text(conv.get("session_id")),
        max_history_messages=None,
        status=status if status in ("ACTIVE", "ARCHIVED", "DELETED") else "ACTIVE",
        created_at=from_iso(conv.get("created_at")),
        updated_at=from_iso(conv.get("updated_at")),
        last_activity_at=from_iso(conv.get("last_activity_at")),
        messages=[],
        metadata=conv.get("metadata"),
        origin=conv["imported_from"] if isinstance(conv.get("imported_from"), dict) else None,
    )
    imported.max_history_messages = _max_history(conv.get("max_history_messages"), imported.warnings)
    imported.messages = [_message(i, m, imported.warnings) for i, m in enumerate(raw_messages)]
    organisation = doc.get("organisation")
    imported.organisation = organisation if isinstance(organisation, dict) else None
    imported.links = [link for link in array(doc.get("links")) if isinstance(link, dict)]
    runs = doc.get("runs")
    if isinstance(runs, list) and runs:
        imported.warnings.append(f"{len(runs)} runs were not imported: runs are history of this server only")
    return imported


def _max_history(value: Any, warnings: list[str]) -> int | None:
    """The conversation's history bound if a live write could set it (conversations.rules), else None (the
    default) with a warning: a file's 2**40 (or true) failed the conversation at its insert, and -1 or a million
    were stored as they came, past what any conversation may have."""
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        try:
            return max_history(value)
        except ThreadlineError as exc:
            warnings.append(f"max_history_messages {str(value)[:32]}: {exc.message}; the default was kept")
            return None
    warnings.append(f"max_history_messages {str(value)[:32]!r} is not a whole number; the default was kept")
    return None


def _message(index: int, raw: Any, warnings: list[str]) -> ImportedMessage:
    where = f"messages[{index}]"
    if not isinstance(raw, dict):
        raise Rejected(f"{where} must be an object")
    key = text(raw.get("id"))
    if not key:
        raise Rejected(f"{where} has no id")
    role = (text(raw.get("role")) or "").upper()
    if role not in ROLES:
        raise Rejected(
            f"{where}: role must be one of user, assistant, system, tool (got {raw.get('role')!r})"
        )
    content = raw.get("content")
    if not isinstance(content, str):
        raise Rejected(f"{where}: content must be a string")
    parent = raw.get("parent_id")
    if parent is not None and not isinstance(parent, str):
        raise Rejected(f"{where}: parent_id must be a string or null")
    tokens = obj(raw.get("tokens"))
    attachments = array(raw.get("attachments"))
    parts = raw.get("parts")
    if parts is not None and not (
        isinstance(parts, list) and all(isinstance(p, dict) and isinstance(p.get("type"), str) for p in parts)
    ):
        raise Rejected(f"{where}: parts must be an array of objects with a type")
    deleted_at = from_iso(raw.get("deleted_at"))
    if deleted_at is not None and (content or parts or raw.get("metadata") or attachments):
        # A deleted message is a tombstone (a live delete empties its text, parts, metadata and files): what a file
        # still carries for one was shown by the API and every export, and no delete could remove it any more.
        warnings.append(f"message {key}: deleted, yet the file holds its content: not kept")
        content, parts, attachments = "", None, []
        raw = {**raw, "metadata": None}
    return ImportedMessage(
        key=key,
        parent_key=parent,
        role=role,
        content=content,
        created_at=from_iso(raw.get("timestamp")),
        model=text(raw.get("model")),
        prompt_tokens=_count(tokens.get("prompt"), f"{where}.tokens.prompt"),
        completion_tokens=_count(tokens.get("completion"), f"{where}.tokens.completion"),
        attachments=[a for a in attachments if isinstance(a, dict)],
        edited_at=from_iso(raw.get("edited_at")),
        deleted_at=deleted_at,
        authored=raw["author_id"] is not None if "author_id" in raw else None,
        metadata=raw.get("metadata"),
        feedback=raw.get("feedback"),
        parts=parts,
    )


def _count(value: Any, where: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 10_000_000:
        raise Rejected(f"{where} must be an integer between 0 and 10000000")
    return value
