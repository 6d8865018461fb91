"""Persisted documents: automatic persisted queries (APQ) and trusted documents.

APQ (Apollo's and urql's persisted-query links): a request carries `extensions.persistedQuery =
{"version": 1, "sha256Hash": H}`. With the hash only, the server runs the document it knows under H, or
answers `PersistedQueryNotFound` (code PERSISTED_QUERY_NOT_FOUND, HTTP 200 as Apollo Server and its clients
expect) and the client sends the hash with the query text; the server checks sha256(text) == H, runs it and
keeps it (database table `persisted_document`, shared by every process, with an in-process LRU in front).
Only authenticated callers register, only documents that validate and hold no inline string nor a bare word,
number or boolean a JSON argument would read (caller content, which deletes and erasure could not reach here:
it goes in variables), only up to
THREADLINE_PERSISTED_DOCUMENT_MAX_BYTES each and THREADLINE_PERSISTED_DOCUMENTS_MAX in all (least recently
used evicted): a document is addressed by its own hash, so nobody can make another text run under it.

Trusted documents (THREADLINE_TRUSTED_DOCUMENTS=true): only documents an operator registered from a client's
manifest (`threadline documents register`) run, named by `documentId` (the manifest's id, or "sha256:H"), by
`extensions.persistedQuery`, or sent as text that hashes to a registered one. An unknown id or hash is
PERSISTED_QUERY_NOT_FOUND; any other text is BAD_USER_INPUT (`extensions.reason: "untrustedDocument"`), so a
persisted-query link gives up after its one retry instead of looping.

The hook is this schema extension, which runs for every operation of every transport (HTTP POST and GET,
batches, WebSocket): it fills in the document's text before strawberry parses it, or refuses the operation
as a pre-execution error (a placeholder document carries the error through strawberry's own path, so the
error codes, request ids and status handling of graphql.errors apply). graphql.view lifts a top-level
`documentId` into the extensions (strawberry only passes on `query`, `variables`, `operationName` and
`extensions`). Over WebSocket strawberry passes no extensions: operations there send their text.
"""

from __future__ import annotations

import hashlib
import logging
import re
import weakref
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from graphql import (
    BREAK,
    DocumentNode,
    GraphQLError,
    GraphQLSchema,
    StringValueNode,
    TypeInfo,
    TypeInfoVisitor,
    ValueNode,
    Visitor,
    get_named_type,
    is_enum_type,
    is_scalar_type,
    parse,
    visit,
)
from strawberry.extensions import SchemaExtension
from strawberry.types.graphql import OperationType

from threadline.documents import repository
from threadline.errors import ErrorCode, ThreadlineError
from threadline.graphql import request_json
from threadline.settings import Settings

log = logging.getLogger(__name__)

NOT_FOUND_MESSAGE = "PersistedQueryNotFound"  # the exact text Apollo's and urql's links look for
HASH_MISMATCH_MESSAGE = "provided sha does not match query"
DOCUMENT_ID_MAX_CHARS = 200  # the table's id column
_SHA256 = re.compile(r"[0-9a-fA-F]{64}")
# Carries a refusal through strawberry's pre-execution path (it needs a document with an operation, of a type
# the transport allows: a multipart HTTP stream allows subscriptions only; validation is skipped once the
# refusal is set, so the subscription's bare __typename never runs).
_PLACEHOLDER = parse("query PersistedDocumentRefused { __typename }")
_STREAM_PLACEHOLDER = parse("subscription PersistedDocumentRefused { __typename }")
_CACHE_MAX_BYTES = 8 * 1024 * 1024


def sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(frozen=True)
class Document:
    id: str
    sha256: str
    body: str
    pinned: bool


class DocumentCache:
    """This process's most recently used documents, by id and by hash, bounded in bytes. Entries are only
    ever added for documents the database holds; a document's text never changes, nor does a pinned one
    become unpinned, so an entry cannot go stale (an evicted row just costs the client a re-send)."""

    def __init__(self, max_bytes: int = _CACHE_MAX_BYTES) -> None:
        self.max_bytes = max_bytes
        self.size = 0
        self.entries: OrderedDict[tuple[str, str], Document] = OrderedDict()

    def get(self, kind: str, key: str) -> Document | None:
        doc = self.entries.get((kind, key))
        if doc is not None:
            self.entries.move_to_end((kind, key))
        return doc

    def put(self, doc: Document) -> None:
        for key in (("id", doc.id), ("sha", doc.sha256)):
            old = self.entries.pop(key, None)
            if old is not None:
                self.size -= len(old.body) + 100
            self.entries[key] = doc
            self.size += len(doc.body) + 100
        while self.size > self.max_bytes and self.entries:
            _, evicted = self.entries.popitem(last=False)
            self.size -= len(evicted.body) + 100


# One cache per database (a test process may run servers on different databases).
_CACHES: weakref.WeakKeyDictionary[Any, DocumentCache] = weakref.WeakKeyDictionary()


def cache_for(db: Any) -> DocumentCache:
    cache = _CACHES.get(db)
    if cache is None:
        cache = _CACHES[db] = DocumentCache()
    return cache


def _document(row: Any) -> Document | None:
    if row is None:
        return None
    return Document(row["id"], row["sha256"], row["body"], row["pinned"])


async def _find(
    db: Any, kind: str, key: str, fetch: Callable[[Any, str], Awaitable[Any]], *, pinned: bool
) -> Document | None:
    """The document under `key` (`kind` "sha" or "id"): from the process's cache, else from the database
    (`fetch`), which also refreshes a cached copy that is not pinned when a pinned one is asked for."""
    cache = cache_for(db)
    doc = cache.get(kind, key)
    if doc is None or (pinned and not doc.pinned):
        doc = _document(await fetch(db, key))
        if doc is not None:
            cache.put(doc)
    if doc is None or (pinned and not doc.pinned):
        return None
    return doc


async def find_by_sha256(db: Any, sha256: str, *, pinned: bool) -> Document | None:
    return await _find(db, "sha", sha256, repository.by_sha256, pinned=pinned)


async def find_by_id(db: Any, doc_id: str, *, pinned: bool) -> Document | None:
    if doc_id.startswith("sha256:") and _SHA256.fullmatch(doc_id[7:]):
        return await find_by_sha256(db, doc_id[7:].lower(), pinned=pinned)
    return await _find(db, "id", doc_id, repository.by_id, pinned=pinned)


async def lift_document_ids(data: Any, request: Any) -> Any:
    """`data` (strawberry's parsed request, or a batch's list of them) with a top-level `documentId` (GraphQL
    over HTTP's persisted documents: a POST body's field, or a GET parameter) put into its extensions, where
    PersistedDocuments finds it; strawberry passes on only query, variables, operationName and extensions."""
    if request.method == "GET":
        raw: Any = (
            {"documentId": request.query_params["documentId"]} if "documentId" in request.query_params else {}
        )
    else:
        body = await request.get_body()  # already read (and cached) by strawberry
        raw = (
            request_json.decode(body)
            if b"documentId" in (body if isinstance(body, bytes) else body.encode())
            else {}
        )
    items, raws = (data, raw) if isinstance(data, list) else ([data], [raw])
    for item, fields in zip(items, raws if isinstance(raws, list) else [], strict=False):
        if isinstance(fields, dict) and "documentId" in fields:
            item.extensions = {**(item.extensions or {}), "documentId": fields["documentId"]}
    return data


def _refuse(execution: Any, error: Exception) -> None:
    allowed = tuple(getattr(execution, "allowed_operations", None) or ())
    streamed = bool(allowed) and OperationType.QUERY not in allowed
    execution.graphql_document = _STREAM_PLACEHOLDER if streamed else _PLACEHOLDER
    message = error.message if isinstance(error, ThreadlineError) else "Internal server error"
    execution.pre_execution_errors = [GraphQLError(message, original_error=error)]


def _bad_request(message: str, **extensions: Any) -> ThreadlineError:
    return ThreadlineError(ErrorCode.BAD_USER_INPUT, message, **extensions)


def _not_found() -> ThreadlineError:
    return ThreadlineError(ErrorCode.PERSISTED_QUERY_NOT_FOUND, NOT_FOUND_MESSAGE)


def _untrusted() -> ThreadlineError:
    return _bad_request(
        "This server runs only registered operations (trusted documents), and this document is not one of "
        "them: register the client's manifest with `threadline documents register`",
        reason="untrustedDocument",
    )


def _requested_hash(extensions: dict[str, Any]) -> str | None:
    """The `sha256Hash` of `extensions.persistedQuery` (lower case); None without one; BAD_USER_INPUT for a
    malformed one."""
    persisted = extensions.get("persistedQuery")
    if persisted is None:
        return None
    sha = persisted.get("sha256Hash") if isinstance(persisted, dict) else None
    if (
        not isinstance(persisted, dict)
        or persisted.get("version") != 1
        or not isinstance(sha, str)
        or not _SHA256.fullmatch(sha)
    ):
        raise _bad_request(
            "extensions.persistedQuery must be {version: 1, sha256Hash: <64 hexadecimal digits>}"
        )
    return sha.lower()


# Literals that are never caller content where their type expects them: a number for Int or Float, a Boolean.
_PLAIN_SCALARS = frozenset({"Int", "Float", "Boolean"})


class _ContentFinder(Visitor):
    """Finds a literal that may be caller content: a string anywhere; a bare word, number or boolean where the
    schema expects no enum value or plain scalar (a JSON scalar reads `{note: secretword}` as the string
    "secretword")."""

    found = False

    def __init__(self, type_info: TypeInfo) -> None:
        super().__init__()
        self.type_info = type_info

    def enter_string_value(self, node: StringValueNode, *_: Any) -> Any:
        self.found = True
        return BREAK

    def enter_enum_value(self, node: ValueNode, *_: Any) -> Any:
        return self._typed(is_enum_type)

    def enter_int_value(self, node: ValueNode, *_: Any) -> Any:
        return self._typed(_plain)

    def enter_float_value(self, node: ValueNode, *_: Any) -> Any:
        return self._typed(_plain)

    def enter_boolean_value(self, node: ValueNode, *_: Any) -> Any:
        return self._typed(_plain)

    def _typed(self, expected: Callable[[Any], bool]) -> Any:
        named = get_named_type(self.type_info.get_input_type())
        if named is not None and expected(named):
            return None
        self.found = True
        return BREAK


def _plain(named: Any) -> bool:
    return is_scalar_type(named) and named.name in _PLAIN_SCALARS


def _carries_content(schema: GraphQLSchema, document: DocumentNode | None) -> bool:
    """Whether `document` holds a literal that may be caller content (arguments, input objects, defaults,
    directives): `_ContentFinder`."""
    if document is None:
        return True
    type_info = TypeInfo(schema)
    finder = _ContentFinder(type_info)
    visit(document, TypeInfoVisitor(type_info, finder))
    return finder.found


class PersistedDocuments(SchemaExtension):
    """Resolves persisted documents before parsing; registers automatically persisted ones after validation."""

    async def on_operation(self) -> AsyncIterator[None]:
        execution = self.execution_context
        self.register: str | None = None
        try:
            await self._resolve(execution)
        except ThreadlineError as exc:
            _refuse(execution, exc)
        except Exception as exc:  # the database: graphql.errors answers UNAVAILABLE, or masks it as INTERNAL
            _refuse(execution, exc)
        yield

    async def _resolve(self, execution: Any) -> None:
        context = execution.context
        settings: Settings = getattr(context, "settings", None) or Settings()
        db = getattr(context, "db", None)
        trusted = settings.trusted_documents
        extensions = (
            execution.operation_extensions if isinstance(execution.operation_extensions, dict) else {}
        )
        sha = _requested_hash(extensions)
        doc_id = extensions.get("documentId")
        query = execution.query
        if doc_id is not None and (
            not isinstance(doc_id, str) or not 0 < len(doc_id) <= DOCUMENT_ID_MAX_CHARS
        ):
            raise _bad_request(f"documentId must be a string of 1 to {DOCUMENT_ID_MAX_CHARS} characters")
        if query is not None and sha is not None and sha256_hex(query) != sha:
            raise _bad_request(HASH_MISMATCH_MESSAGE)
        if query is not None:
            if trusted:
                if await find_by_sha256(db, sha256_hex(query), pinned=True) is None:
                    raise _untrusted()
            elif sha is not None and cache_for(db).get("sha", sha) is None:
                self.register = query  # once it validates (on_validate)
            return
        if sha is None and doc_id is None:
            return  # strawberry answers "No GraphQL query found"
        if doc_id is not None:
            doc = await find_by_id(db, doc_id, pinned=trusted)
        else:
            assert sha is not None
            doc = await find_by_sha256(db, sha, pinned=trusted)
        if doc is None:
            raise _not_found()
        execution.query = doc.body

    async def on_validate(self) -> AsyncIterator[None]:
        yield
        execution = self.execution_context
        query = getattr(self, "register", None)
        if query is None or execution.pre_execution_errors:
            return
        context = execution.context
        settings: Settings = context.settings
        if len(query.encode("utf-8", "surrogatepass")) > settings.persisted_document_max_bytes:
            return  # runs, but is not kept: the client sends it in full each time
        if _carries_content(execution.schema._schema, execution.graphql_document):
            # An inline string is caller content (a title, a message, a search term), and so is a bare word a JSON
            # argument reads as one; the shared table is not reached by deletes or erasure, so such a document runs
            # but is not kept (send it as a variable).
            return
        try:
            await context.principal()  # only authenticated callers add to the shared table
        except Exception:
            return
        sha = sha256_hex(query)
        try:
            await repository.register_automatic(context.db, sha, query, settings.persisted_documents_max)
        except Exception:  # the operation still runs; its client sends the text again next time
            log.warning("could not keep persisted query %s", sha, exc_info=True)
            return
        cache_for(context.db).put(Document(sha, sha, query, False))
