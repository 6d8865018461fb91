"""MASK_ON_READ: what a caller reads is masked unless they wrote it or are an admin.

Every Message the API returns is built by `threads.types.Message.stored` (tree reads build ~10,000 per
thread, so the content stays a plain field served by the compiled executor); the builder asks `active()`
whether this request's caller reads masked content. The answer lives in a context variable bound when the
request's GraphQL context is made (`bind`) and settled when its caller is authenticated (`settle`): resolvers
run in tasks copied from the request's, so they all see the same scope. Outside GraphQL (the CLI, the share
page, exports) nothing is bound and each path applies `mask_for` itself.
"""

from __future__ import annotations

import contextvars
import html
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from threadline.auth.principal import Principal
from threadline.ids import Kind, encode_id
from threadline.privacy.detectors import PiiKind
from threadline.privacy.masking import from_json, mask, mask_json, mask_text, splice
from threadline.privacy.modes import PiiPolicy, parse


@dataclass(frozen=True, slots=True)
class Reader:
    """A caller who reads other people's content masked."""

    user_id: uuid.UUID | None  # None: nobody's own (an anonymous reader of a share link)

    def masks(self, author_id: uuid.UUID | None) -> bool:
        return self.user_id is None or author_id != self.user_id

    def content(self, author_id: uuid.UUID | None, text: str) -> str:
        return mask_text(text) if text and self.masks(author_id) else text

    def json(self, author_id: uuid.UUID | None, value: Any) -> Any:
        return mask_json(value) if self.masks(author_id) else value


class ReadScope:
    """One per GraphQL context: who its caller reads as, once known, and the conversations whose read by a
    non-participant was audited already (audit.reads: once per request)."""

    __slots__ = ("audited", "reader")

    def __init__(self) -> None:
        self.reader: Reader | None = None
        self.audited: set[uuid.UUID] = set()


_SCOPE: contextvars.ContextVar[ReadScope | None] = contextvars.ContextVar(
    "threadline_read_scope", default=None
)


def bind(scope: ReadScope) -> None:
    _SCOPE.set(scope)


def settle(scope: ReadScope, principal: Principal) -> None:
    scope.reader = reader_for(principal)


def reader_for(principal: Principal) -> Reader | None:
    if parse(principal.pii_policy) is PiiPolicy.MASK_ON_READ and not principal.is_admin:
        return Reader(principal.user_id)
    return None


def anonymous_reader(policy: PiiPolicy | str) -> Reader | None:
    """A reader with no identity (share pages): masked under MASK_ON_READ."""
    return Reader(None) if parse(policy) is PiiPolicy.MASK_ON_READ else None


def first_audit(conversation_id: uuid.UUID) -> bool:
    """True the first time this request (or socket) reads `conversation_id` as a non-participant;
    always True outside GraphQL (the CLI, a share page)."""
    scope = _SCOPE.get()
    if scope is None:
        return True
    if conversation_id in scope.audited:
        return False
    scope.audited.add(conversation_id)
    return True


def active() -> Reader | None:
    """This request's reader if it reads masked content, else None."""
    scope = _SCOPE.get()
    return scope.reader if scope is not None else None


def masked_with_spans(text: str, stored: Any = None) -> tuple[str, list[dict[str, Any]]]:
    """`text` masked, and the placeholders' spans. From the detections stored with it (`message.pii`, written
    with the text: splicing costs a copy) when they fit it, else by detecting again."""
    found = from_json(stored) if _fits(stored, len(text)) else None
    masked, spans = mask(text) if found is None else splice(text, found)
    return masked, [{"kind": d.kind.value, "start": d.start, "end": d.end} for d in spans]


_KINDS = frozenset(kind.value for kind in PiiKind)


def _fits(stored: Any, length: int) -> bool:
    """Stored detections that can be spans of a text of `length`: in order, apart, inside it. (Every writer of
    the content writes them with it, or clears them: privacy.writing, threads.repository.set_content,
    runs.output_repository.)"""
    if not isinstance(stored, list):
        return False
    end = 0
    for d in stored:
        if not isinstance(d, dict) or d.get("kind") not in _KINDS:
            return False
        if not isinstance(d.get("start"), int) or not isinstance(d.get("end"), int):
            return False
        if d["start"] < end or d["end"] <= d["start"] or d["end"] > length:
            return False
        end = d["end"]
    return True


def mask_export(document: dict[str, Any], reader: Reader | None) -> None:
    """A Threadline export document (porting.threadline_format) as `reader` may read it: the content and parts
    of the messages they did not write masked in place."""
    if reader is None:
        return
    own = encode_id(Kind.USER, reader.user_id) if reader.user_id is not None else None
    for entry in document.get("messages", []):
        if own is not None and entry.get("author_id") == own:
            continue
        if isinstance(entry.get("content"), str):
            entry["content"] = mask_text(entry["content"])
        if entry.get("parts") is not None:
            entry["parts"] = mask_json(entry["parts"])


def masked_snippet(reader: Reader | None, message: Any, snippet: str) -> str:
    """A search snippet (HTML-escaped, words in <mark>) of `message` (a row, or None for a title match) for
    `reader`: when the message holds PII and the reader reads it masked, the snippet is the start of the masked
    text instead (a fragment may cut a detection in two, and a cut card number or key no longer validates)."""
    if reader is None or message is None or not reader.masks(message["author_id"]):
        return snippet
    masked, spans = mask(message["content"])
    if not spans:
        return snippet
    return html.escape(masked[:_SNIPPET_CHARS], quote=False)


_SNIPPET_CHARS = 200


def masked_rows(reader: Reader | None, rows: Sequence[Any]) -> list[Any]:
    """Message rows (with author_id and content) as `reader` may read them."""
    if reader is None:
        return list(rows)
    return [{**row, "content": reader.content(row["author_id"], row["content"])} for row in rows]
