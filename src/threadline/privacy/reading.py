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
import uuid
from dataclasses import dataclass
from typing import Any

from threadline.auth.principal import Principal
from threadline.privacy.masking import mask, mask_json, mask_text
from threadline.privacy.policy import PiiPolicy, parse


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
    """One per GraphQL context: who its caller reads as, once known."""

    __slots__ = ("reader",)

    def __init__(self) -> None:
        self.reader: Reader | None = None


_SCOPE: contextvars.ContextVar[ReadScope | None] = contextvars.ContextVar("threadline_read_scope", default=None)


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


def active() -> Reader | None:
    """This request's reader if it reads masked content, else None."""
    scope = _SCOPE.get()
    return scope.reader if scope is not None else None


def masked_with_spans(text: str) -> tuple[str, list[dict[str, Any]]]:
    masked, spans = mask(text)
    return masked, [{"kind": d.kind.value, "start": d.start, "end": d.end} for d in spans]
