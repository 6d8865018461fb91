"""A ChatGPT conversation read from its JSON text without decoding its messages: the nodes of its `mapping`, each
message kept as the bytes of its JSON (msgspec's `Raw`) and decoded when first asked for (`LazyNodes`).

What a re-import of a grown conversation needs is each node's digest (has it changed since the earlier import?)
and the few new nodes with the ones that place them: reading ~110 nodes to decode ~15 of them costs ~0.15 ms with
msgspec, where decoding them all with orjson (and serialising each message again for its digest) cost ~1 ms.

Of the conversation's other fields only those the reader reads are decoded (one msgspec pass over the text).

A node's digest is of its message's JSON bytes as the file has them and of its parent (`raw_digest`): 20 hex digits
(10 bytes), where `chatgpt.node_digests` (of each decoded message serialised again, for conversations read without
their text) gives 16, so an import can tell which kind an earlier import kept (`is_raw`). The bytes are those of
the item (porting.jsonstream reads the file as UTF-8): a later export that writes the same messages differently
(other spacing, escapes or key order inside a message) looks changed and is merged whole, by source id: slower,
never wrong.

Only the conversation's own text is read: it is an element the stream reader found whole and within the item size
limit, and anything msgspec refuses (a node that is not an object, nesting past its limit, a number it cannot
hold) leaves the caller to decode the text as before (`read` returns None).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import ItemsView, ValuesView
from typing import Any

import msgspec
import orjson

# Past this many nodes no digests are kept (a bound on what import_source holds): a re-import reads it all.
MAX_DIGESTED_NODES = 50_000
RAW_DIGEST_HEX = 20


class _Node(msgspec.Struct):
    """A node of `mapping` as the importer reads it; other fields are not read (they never were)."""

    id: Any = None
    message: msgspec.Raw = msgspec.Raw(b"null")
    parent: Any = None
    children: Any = None


def raw_digest(message: msgspec.Raw, parent: Any) -> str:
    digest = hashlib.blake2b(message, digest_size=RAW_DIGEST_HEX // 2)
    digest.update(str(parent).encode())
    return digest.hexdigest()


# The digest kept of a node whose message was deleted or erased here (threads.repository.forget_import_digests):
# the node is known (its message is stored, as a tombstone) and never compared, so a re-import neither takes it for
# new nor for changed, and the deleted message stays deleted. Nothing of its text is kept.
FORGOTTEN = ""


def is_raw(digests: dict[str, str]) -> bool:
    """Whether node digests were made by `raw_digest` (an empty set: either kind; an import keeps one kind)."""
    first = next((d for d in digests.values() if d != FORGOTTEN), "0" * RAW_DIGEST_HEX)
    return len(first) == RAW_DIGEST_HEX


def same(seen: dict[str, str], key: str, digest: str) -> bool:
    """Whether node `key`, with this digest now, is as the import that saw the nodes `seen` saw it (a node it did
    not see is; a forgotten one, `FORGOTTEN`, is never compared)."""
    kept = seen.get(key, digest)
    return kept == digest or kept == FORGOTTEN


def forgets(seen: dict[str, str] | None) -> bool:
    """Whether an earlier import's digests name a node whose message was deleted since: no fingerprint of the bytes
    of a conversation holding its text is kept again."""
    return seen is not None and FORGOTTEN in seen.values()


def _loads(raw: msgspec.Raw) -> Any:
    view = memoryview(raw)
    try:
        return orjson.loads(view)
    except orjson.JSONDecodeError:  # what orjson refuses (a lone surrogate escape): as jsonstream.decode
        return json.loads(bytes(view))


class LazyNodes(dict[str, Any]):
    """A conversation's `mapping`: node id -> node (`{id, message, parent, children}`), a node decoded when it is
    first asked for (`[]`, `get`, `items`, `values`). `digests` are its nodes' (`raw_digest`); `whole()` decodes the
    whole mapping at once, as a first import reads it (orjson: faster than node by node)."""

    def __init__(self, nodes: dict[str, _Node], text: str) -> None:
        super().__init__(nodes)
        self._text = text
        self.digests: dict[str, str] = {}
        if len(nodes) <= MAX_DIGESTED_NODES:
            # An id PostgreSQL's jsonb cannot hold (NUL) is left out, as chatgpt.node_digests leaves it out.
            self.digests = {k: raw_digest(n.message, n.parent) for k, n in nodes.items() if "\x00" not in k}
        self.decoded = 0  # nodes decoded so far (not counting `whole`)

    def __getitem__(self, key: str) -> Any:
        value = super().__getitem__(key)
        if isinstance(value, _Node):
            value = {
                "id": value.id,
                "message": _loads(value.message),
                "parent": value.parent,
                "children": value.children,
            }
            super().__setitem__(key, value)
            self.decoded += 1
        return value

    def get(self, key: str, default: Any = None) -> Any:
        return self[key] if key in self else default

    def items(self) -> ItemsView[str, Any]:  # type: ignore[override]
        self._decode_all()
        return super().items()

    def values(self) -> ValuesView[Any]:  # type: ignore[override]
        self._decode_all()
        return super().values()

    def _decode_all(self) -> None:
        for key in self:
            self[key]

    def whole(self) -> dict[str, Any]:
        """The mapping decoded whole from the conversation's text (the same values node by node would give)."""
        try:
            mapping = orjson.loads(self._text)["mapping"]
        except orjson.JSONDecodeError:
            mapping = json.loads(self._text)["mapping"]
        assert isinstance(mapping, dict)
        return mapping


class _Conversation(msgspec.Struct):
    """The fields of a conversation that the ChatGPT reader reads (chatgpt.parse, chatgpt.external_id); the others
    are skipped, not decoded."""

    mapping: dict[str, _Node] | None = None
    conversation_id: Any = None
    id: Any = None
    title: Any = None
    create_time: Any = None
    update_time: Any = None
    current_node: Any = None
    default_model_slug: Any = None
    is_archived: Any = None


_CONVERSATION = msgspec.json.Decoder(_Conversation)
_FIELDS = [f for f in _Conversation.__struct_fields__ if f != "mapping"]


def read(text: str) -> dict[str, Any] | None:
    """The conversation of a JSON text (an object): the fields the reader reads, its `mapping` a `LazyNodes`; None
    when it cannot be read so (not an object, a mapping that is not an object of objects, no id, ...): the caller
    decodes the text as before (and the reader says what is wrong with it)."""
    try:
        conversation = _CONVERSATION.decode(text)
    except (ValueError, msgspec.MsgspecError, RecursionError):
        return None
    if not isinstance(conversation.conversation_id, str) and not isinstance(conversation.id, str):
        return None
    fields = {name: getattr(conversation, name) for name in _FIELDS}
    if conversation.mapping is not None:
        fields["mapping"] = LazyNodes(conversation.mapping, text)
    return fields
