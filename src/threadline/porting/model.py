"""What every import format is read into: a conversation and its messages, independent of the source.

Format readers (`chatgpt`, `claude`, `threadline_format`) are pure functions from decoded JSON to
`ImportedConversation`; the importer turns that into rows. A reader raises `Rejected` for input it
cannot use and appends to `warnings` for what it had to repair (missing parents, cycles, ...).
"""

from __future__ import annotations

import re
from collections.abc import Container, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any


class ImportFormat(StrEnum):
    THREADLINE = "threadline"
    CHATGPT = "chatgpt"
    CLAUDE = "claude"
    LIBRECHAT = "librechat"
    OPENWEBUI = "openwebui"


class Rejected(ValueError):
    """This conversation cannot be imported (the others of the same file still can)."""


@dataclass
class ImportedMessage:
    key: str  # the source's message id, unique within the conversation
    parent_key: str | None
    role: str  # USER | ASSISTANT | SYSTEM | TOOL
    content: str
    created_at: datetime | None = None
    model: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    attachments: list[dict[str, Any]] = field(default_factory=list)
    edited_at: datetime | None = None
    deleted_at: datetime | None = None
    # Whether the importing user becomes the author; None: USER messages are theirs, the others no one's.
    authored: bool | None = None
    # As the file has them; bounded by the importer (metadata.rules, feedback.rules).
    metadata: Any = None
    feedback: Any = None  # the exporting user's rating: {rating, reasons, comment, created_at, updated_at}
    # Content parts (parts.model) when the message is more than text; `content` is then their projection.
    parts: list[dict[str, Any]] | None = None
    # Only reasoning (a thinking model's thoughts): folded into the answer below it by the reader.
    reasoning: bool = False


@dataclass
class ImportedConversation:
    source: ImportFormat
    external_id: str
    title: str
    # Siblings appear in the order they should keep (oldest branch first); parents may come anywhere.
    messages: list[ImportedMessage]
    description: str = ""
    tags: list[str] = field(default_factory=list)
    ai_provider: str | None = None
    model: str | None = None
    session_id: str | None = None
    max_history_messages: int | None = None
    status: str = "ACTIVE"
    created_at: datetime | None = None
    updated_at: datetime | None = None
    last_activity_at: datetime | None = None
    metadata: Any = None  # as the file has it; bounded by the importer (metadata.rules)
    warnings: list[str] = field(default_factory=list)
    # The message the source's user was on (ChatGPT's `current_node`): the importing owner's current leaf.
    current_key: str | None = None
    # Threadline format: where the exporting user kept it (folder path, pin, bookmarks) and its links to other
    # conversations; restored for the importing user after the import (porting/organised.py).
    organisation: dict[str, Any] | None = None
    links: list[dict[str, Any]] = field(default_factory=list)
    # Where the conversation first came from, as a Threadline export carries it (`conversation.imported_from`):
    # kept over a move between servers. None: this import is the origin (none for a Threadline file without it).
    origin: dict[str, Any] | None = None
    # ChatGPT: a digest of each source node (chatgpt.node_digests), kept so a re-import reads only new nodes.
    node_digests: dict[str, str] | None = None


# The times a file may give (else they read as absent): what Python and PostgreSQL both hold in UTC, with room for
# the importer's repairs (a reply dated before its parent follows it by a microsecond: past datetime.max that
# raised OverflowError, as did "0001-01-01T00:00:00+14:00" turned to UTC).
EARLIEST = datetime(1, 1, 2, tzinfo=UTC)
LATEST = datetime(9999, 1, 1, tzinfo=UTC)


def in_range(value: datetime | None) -> datetime | None:
    """`value` if it lies between EARLIEST and LATEST, else None."""
    try:
        return value if value is not None and EARLIEST <= value.astimezone(UTC) < LATEST else None
    except OverflowError:
        return None


def from_unix(value: Any) -> datetime | None:
    """Unix seconds (int or float, as ChatGPT writes them) as an aware datetime; None if absent or bad."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        return in_range(datetime.fromtimestamp(float(value), tz=UTC))
    except (OverflowError, OSError, ValueError):
        return None


def from_iso(value: Any) -> datetime | None:
    """An ISO 8601 time (with 'Z' or an offset; naive times are taken as UTC); None if absent or bad."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00") if value.endswith("Z") else value)
    except ValueError:
        return None
    return in_range(parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC))


_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def storable(value: Any) -> tuple[Any, int]:
    """Decoded JSON with each NUL and lone surrogate in its strings (keys too) replaced by U+FFFD, in place, and how
    many strings were: valid JSON escapes, but not text PostgreSQL (or UTF-8) can take. The API refuses them in a
    request's JSON; a file's conversation keeps its text, repaired and reported. A loop, not a recursion: a file's
    values nest as deep as the JSON decoder allows."""
    repaired = 0

    def clean(text: str) -> str:
        nonlocal repaired
        if _UNSTORABLE.search(text) is None:
            return text
        repaired += 1
        return text.replace("\x00", "\ufffd").encode("utf-16", "surrogatepass").decode("utf-16", "replace")

    if isinstance(value, str):
        return clean(value), repaired
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if any(_UNSTORABLE.search(k) for k in item):
                cleaned = {clean(k): v for k, v in item.items()}
                item.clear()
                item.update(cleaned)
            for k, v in item.items():
                if isinstance(v, str):
                    item[k] = clean(v)
                elif isinstance(v, dict | list):
                    stack.append(v)
        elif isinstance(item, list):
            for i, v in enumerate(item):
                if isinstance(v, str):
                    item[i] = clean(v)
                elif isinstance(v, dict | list):
                    stack.append(v)
    return value, repaired


def text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def obj(value: Any) -> dict[str, Any]:
    """`value` if it is a JSON object, else an empty one (sources leave out or null what they like)."""
    return value if isinstance(value, dict) else {}


def array(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def break_cycles(parents: dict[str, str | None]) -> list[str]:
    """Make every parent chain end at a root: a node on a cycle loses its parent. Returns those nodes.

    `parents` maps a node to its parent (None for a root, or a key that is not in the map, which
    also counts as a root). It is changed in place.
    """
    state: dict[str, int] = {}  # 1 = on the current walk, 2 = known to reach a root
    broken: list[str] = []
    for start in parents:
        walk: list[str] = []
        node: str | None = start
        while node is not None and node in parents and state.get(node) is None:
            state[node] = 1
            walk.append(node)
            node = parents[node]
        if node is not None and state.get(node) == 1:
            # The walk came back to itself: cut the cycle where it closed.
            parents[node] = None
            broken.append(node)
        for visited in walk:
            state[visited] = 2
    return broken


def settle_parents(
    claimed: Iterable[tuple[str, str | None]], known: Container[str], noun: str, warnings: list[str]
) -> dict[str, str | None]:
    """Each node's parent, repaired into a forest: a parent that is not `known` makes its node a thread
    root, and a parent cycle is cut where it closes (`break_cycles`); each repair is reported in `warnings`
    under `noun` ("node", "message") and the node's key. The one home of this rule for the format readers
    and the importer, so that every source is repaired, and reported, alike."""
    parents: dict[str, str | None] = {}
    for key, parent in claimed:
        if parent is not None and parent not in known:
            warnings.append(f"{noun} {key}: parent {parent} is missing; the {noun} starts a new thread")
            parent = None
        parents[key] = parent
    for key in break_cycles(parents):
        warnings.append(f"{noun} {key}: its parents form a cycle; the cycle was cut here")
    return parents


def skip_empty(messages: list[ImportedMessage], warnings: list[str]) -> list[ImportedMessage]:
    """The messages without the empty ones (no text, parts or attachments): each empty one's replies answer its
    parent instead. The one rule of every format reader for empty messages; the skipped ones that were not
    system messages (ChatGPT's blank system prompt is in every conversation) are counted in `warnings`."""
    empty = {
        m.key: m.parent_key for m in messages if not m.content.strip() and not m.parts and not m.attachments
    }
    if not empty:
        return messages

    # Each empty message's nearest kept ancestor, found once: walked again for each reply, a chain of k empty
    # messages under which k replies sit cost k * k steps (20,000 of each: 95 s of one core).
    found: dict[str, str | None] = {}

    def kept(parent: str | None) -> str | None:
        walk: list[str] = []
        on_walk: set[str] = set()
        while parent is not None and parent in empty and parent not in found and parent not in on_walk:
            on_walk.add(parent)
            walk.append(parent)
            parent = empty[parent]
        if parent is not None and parent in found:
            result = found[parent]
        else:
            result = None if parent in empty else parent  # a cycle of empty messages: no kept ancestor
        for key in walk:
            found[key] = result
        return result

    out = []
    for m in messages:
        if m.key in empty:
            continue
        m.parent_key = kept(m.parent_key)
        out.append(m)
    reported = [m.key for m in messages if m.key in empty and m.role != "SYSTEM"]
    if reported:
        warnings.append(empty_skipped(reported))
    return out


def empty_skipped(keys: list[str]) -> str:
    """The report of skipped empty messages, the same words for every format."""
    return (
        f"{len(keys)} empty message(s) skipped (no text, parts or files); their replies now answer the message "
        f"before them: {', '.join(keys[:5])}{', ...' if len(keys) > 5 else ''}"
    )


# UTF-8 bytes decoded as Windows-1252 (or Latin-1): a lead byte's character followed by continuation bytes'.
_CP1252_HIGH = "€\x81‚ƒ„…†‡ˆ‰Š‹Œ\x8dŽ\x8f\x90‘’“”•–—˜™š›œ\x9džŸ"
_CONTINUATION = "[" + re.escape(_CP1252_HIGH + "".join(chr(c) for c in range(0xA0, 0xC0))) + "]"
_MOJIBAKE = re.compile(
    f"[\xc2-\xdf]{_CONTINUATION}|[\xe0-\xef]{_CONTINUATION}{{2}}|[\xf0-\xf4]{_CONTINUATION}{{3}}"
)
_BYTE_OF = {ch: 0x80 + i for i, ch in enumerate(_CP1252_HIGH)}


def _as_utf8(match: re.Match[str]) -> str:
    raw = bytes(_BYTE_OF.get(ch, ord(ch)) for ch in match.group())
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return match.group()


def repair_mojibake(value: str) -> str:
    """`value` with text that was UTF-8 read as Windows-1252 (\"cafÃ©\", \"itâ€™s\") decoded again
    (\"café\", \"it’s\"); other text is left alone. Only sequences that decode as UTF-8 are changed."""
    if value.isascii():
        return value
    return _MOJIBAKE.sub(_as_utf8, value)
