"""Parsed documents remembered per query text (issue 14 item 3): clients send the same few documents again and
again, and parsing one was ~0.15 ms of a 1 ms `viewer` request and ~0.5 ms of a page of 50 conversations, every
time.

Kept only for documents with no string literal: a literal may be caller content (a title, a message text),
and content must live only where deletes and erasure reach it (so graphql.persisted keeps no such document
either). Bounded by count and by the length of a query; a document parsed under another token limit is
another entry. graphql-core never changes a parsed document, so requests can share one.
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict

from graphql import DocumentNode

MAX_DOCUMENTS = 500
MAX_QUERY_CHARS = 20_000

_documents: OrderedDict[tuple[str, int], DocumentNode] = OrderedDict()


def cacheable(query: str | None) -> bool:
    return bool(query) and len(query or "") <= MAX_QUERY_CHARS and '"' not in (query or "")


def cached(query: str, max_tokens: int) -> DocumentNode | None:
    document = _documents.get((query, max_tokens))
    if document is not None:
        with contextlib.suppress(KeyError):  # test servers share a process (and this cache) across threads
            _documents.move_to_end((query, max_tokens))
    return document


def remember(query: str, max_tokens: int, document: DocumentNode) -> None:
    _documents[(query, max_tokens)] = document
    while len(_documents) > MAX_DOCUMENTS:
        with contextlib.suppress(KeyError):
            _documents.popitem(last=False)
