"""Encryption at rest (issue 20 item 1): envelope encryption in the application, AES-256-GCM.

Keys. A data key per tenant (assistant output, chunks, titles) and per user (what the user wrote, and its
edits and logged snapshots) seals content; the data keys are stored in `data_key`, wrapped by a master key
(THREADLINE_MASTER_KEY base64, THREADLINE_MASTER_KEY_FILE, or a KMS through `master.MasterKey`,
THREADLINE_MASTER_KEY_PROVIDER=module:factory). Each sealed value names its data key (envelope.py), so keys
rotate without rewriting content, and a shredded key (`threadline keys shred`, userErase) makes exactly its
values unreadable, in backups too once the master keys that wrapped the backup's key rows are destroyed.

On by default when a master key is configured (THREADLINE_ENCRYPTION=off keeps reading sealed content and
seals nothing new). A server without the key over a database that holds data keys refuses to start.

Writing: the writers seal (`seal`, `seal_many`) just before their statement; the full-text vector of sealed
content is computed in that same statement from the plaintext, passed as a parameter (the trigger leaves
sealed rows alone). Imports seal in their COPY path (porting.bulk_repository: the plaintext is staged beside
the sealed value for the vector), attachment entries with `seal_attachment`, file bytes in every store per
block (`seal_bytes`, `bytes_sealer`); `threadline worker` and `import` refuse to start as a server does. An
edit, delete, erasure or PII mask first drops the replaced text's opened values from this process's cache
(`forget_messages`). Reading: nothing to do: the pool's text and JSON decoders open sealed values (db.content),
unwrapping each data key once per process (cached, bounded, re-read after `key_cache_seconds`), so every
reader gets plaintext, and content of a shredded key reads as `keyring.UNAVAILABLE`.

What stays readable in the database: ids, times, counts, roles, models, token usage, the tree's shape, tags,
metadata, the full-text index (stemmed and unstemmed terms with positions: who wrote which words, not the
order of the text's other words), embeddings (approximate meaning, by design of semantic search), and the
lengths of sealed values (within base64 rounding). SQL that reads content itself (ts_headline, length())
sees ciphertext; snippets of sealed rows are made in Python.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from threadline.crypto import envelope
from threadline.crypto import repository as repo
from threadline.crypto.envelope import BYTES_OVERHEAD, PREFIX
from threadline.crypto.keyring import UNAVAILABLE, Keyring
from threadline.crypto.master import master_keys_from
from threadline.db import Executor, content
from threadline.ids import parse_id
from threadline.settings import Settings

__all__ = [
    "BYTES_OVERHEAD",
    "UNAVAILABLE",
    "Keyring",
    "active",
    "bytes_sealer",
    "forget_messages",
    "install",
    "install_from",
    "open_bytes",
    "seal",
    "seal_attachment",
    "seal_bytes",
    "seal_event_payload",
    "seal_json_strings",
    "seal_many",
    "seal_parts",
    "seal_title",
    "sealed_bytes",
    "sealing",
    "sealing_titles",
]

_keyring: Keyring | None = None


def install(keyring: Keyring | None) -> None:
    """Use `keyring` in this process: pools opened from now on open sealed content, writers seal."""
    global _keyring
    _keyring = keyring
    content.install(keyring)


def install_from(settings: Settings) -> Keyring | None:
    """The keyring the settings configure, installed (None, and nothing installed, without a master key)."""
    masters = master_keys_from(settings)
    if masters is None:
        install(None)
        return None
    keyring = Keyring(
        masters,
        seal_new=settings.encryption != "off",
        seal_titles=settings.encrypt_titles,
        cache_size=settings.key_cache_size,
        cache_seconds=settings.key_cache_seconds,
        plaintext_cache_bytes=settings.plaintext_cache_bytes,
    )
    install(keyring)
    return keyring


def active() -> Keyring | None:
    return _keyring


def sealing() -> bool:
    return _keyring is not None and _keyring.seal_new


def sealing_titles() -> bool:
    return _keyring is not None and _keyring.seal_new and _keyring.seal_titles


async def seal(tenant_id: uuid.UUID, text: str, user_id: uuid.UUID | None = None) -> str:
    """`text` as it is stored: sealed with the user's key (or the tenant's) when encryption is on."""
    keyring = _keyring
    if keyring is None:
        return text
    return await keyring.seal(tenant_id, text, user_id)


async def seal_many(tenant_id: uuid.UUID, texts: list[str], user_id: uuid.UUID | None = None) -> list[str]:
    """Many texts of one owner sealed with one key lookup (the import path's entry point)."""
    keyring = _keyring
    if keyring is None:
        return texts
    return await keyring.seal_many(tenant_id, texts, user_id)


async def seal_title(tenant_id: uuid.UUID, text: str) -> str:
    """A title or description: sealed only where configured (THREADLINE_ENCRYPT_TITLES)."""
    keyring = _keyring
    if keyring is None or not keyring.seal_titles:
        return text
    return await keyring.seal(tenant_id, text)


# The fields of a stored content part (parts.model) that hold content: text and reasoning, tool arguments and results.
PART_TEXT_FIELDS = ("text", "arguments", "content")


async def seal_parts(
    tenant_id: uuid.UUID,
    parts: list[dict[str, Any]] | None,
    user_id: uuid.UUID | None = None,
    *,
    skip_sealed: bool = False,
) -> list[dict[str, Any]] | None:
    """Content parts as stored: their text fields sealed (the JSON decoder opens them on every read); types,
    names, file ids and URLs stay plain. `skip_sealed` (`keys seal`): fields sealed already are left as they are
    (a live write seals whatever it is given, text that looks sealed too)."""
    keyring = _keyring
    if keyring is None or not keyring.seal_new or not parts:
        return parts
    sealed: list[dict[str, Any]] = []
    for part in parts:
        copy = dict(part)
        for field in PART_TEXT_FIELDS:
            value = copy.get(field)
            if isinstance(value, str) and value and not (skip_sealed and value.startswith(PREFIX)):
                copy[field] = await keyring.seal(tenant_id, value, user_id)
        sealed.append(copy)
    return sealed


async def seal_event_payload(tenant_id: uuid.UUID, payload: dict[str, Any]) -> dict[str, Any]:
    """A logged event's payload as stored: a message snapshot's `content` sealed with its author's key (the
    snapshot's `authorId`), a delta's text with the tenant's. The hub's reads open them again (db.content)."""
    keyring = _keyring
    if keyring is None or not keyring.seal_new:
        return payload
    sealed = dict(payload)
    message = payload.get("message")
    if isinstance(message, dict) and isinstance(message.get("content"), str) and message["content"]:
        author = message.get("authorId")
        found = parse_id(author) if isinstance(author, str) else None
        text = message["content"]
        if not text.startswith(PREFIX):
            sealed["message"] = {
                **message,
                "content": await keyring.seal(tenant_id, text, found[1] if found else None),
            }
    delta = payload.get("delta")
    if isinstance(delta, str) and delta and not delta.startswith(PREFIX):
        sealed["delta"] = await keyring.seal(tenant_id, delta)
    return sealed


async def seal_bytes(tenant_id: uuid.UUID, data: bytes) -> bytes:
    """File bytes as they are stored (the tenant's key) when encryption is on."""
    keyring = _keyring
    if keyring is None:
        return data
    return await keyring.seal_bytes(tenant_id, data)


async def bytes_sealer(tenant_id: uuid.UUID) -> Callable[[bytes], bytes] | None:
    """A function sealing blocks of a file with the tenant's key (sync: a thread may run it), or None when
    encryption is off. Each sealed block is BYTES_OVERHEAD bytes longer than the block."""
    keyring = _keyring
    if keyring is None or not keyring.seal_new:
        return None
    key = await keyring.active_key(tenant_id, None)
    cipher = key.cipher
    assert cipher is not None

    def seal_block(block: bytes) -> bytes:
        return envelope.seal_bytes(cipher, key.id, tenant_id, block)

    return seal_block


def sealed_bytes(data: bytes) -> bool:
    """Whether stored bytes start as sealed ones do (opening them says whether they are)."""
    return data.startswith(envelope.BYTES_MARK)


async def open_bytes(data: bytes) -> bytes | None:
    """Stored file bytes opened; None when their key was shredded. Bytes stored plain come back as they are, and
    sealed ones without a keyring (which a server refuses to start without) too."""
    keyring = _keyring
    if keyring is None:
        return data
    return await keyring.open_bytes(data)


async def seal_json_strings(
    tenant_id: uuid.UUID, value: Any, plain_keys: frozenset[str] = frozenset(), *, skip_sealed: bool = False
) -> Any:
    """A JSON value as stored: every non-empty string in it sealed with the tenant's key, but those under a key
    in `plain_keys` (kinds a reader matches on). Keys stay plain. The JSON decoder opens them on every read
    (db.content), so readers see the value as it was. For values free-form enough that any string may be
    content: an import's attachment entries (extracted text, inline data, names)."""
    keyring = _keyring
    if keyring is None or not keyring.seal_new:
        return value
    key = await keyring.active_key(tenant_id, None)
    return keyring.seal_tree(key, value, plain_keys, skip_sealed)


async def seal_attachment(tenant_id: uuid.UUID, data: Any, *, skip_sealed: bool = False) -> Any:
    """An import's attachment entry (message_attachment.data) as stored: every string sealed with the tenant's key
    (extracted text, inline data and names are content) but its `type`, the kind readers match on first."""
    return await seal_json_strings(tenant_id, data, _ATTACHMENT_PLAIN, skip_sealed=skip_sealed)


_ATTACHMENT_PLAIN = frozenset({"type"})


async def forget_messages(db: Executor, tenant_id: uuid.UUID, message_ids: list[uuid.UUID]) -> None:
    """Before these messages' text is replaced or removed (an edit, a delete, an erasure): what this process
    opened of their stored values (content, edits, chunks, logged events) leaves the cache of opened values, so a deleted
    text does not stay in memory until pushed out. One statement, only with that cache on and holding
    something. Other processes keep theirs until pushed out (never served again: the sealed value is gone)."""
    keyring = _keyring
    if keyring is None or not keyring.caching():
        return
    for start in range(0, len(message_ids), _FORGET_BATCH):  # an erasure's many messages: bounded reads
        keyring.forget_values(
            await repo.stored_forms(db, tenant_id, message_ids[start : start + _FORGET_BATCH])
        )


_FORGET_BATCH = 1000


def plain_for_index(stored: str, plaintext: str) -> str | None:
    """The text a writer passes for the full-text vector: the plaintext when `stored` is sealed (the trigger
    skips sealed rows), None otherwise (the trigger computes it)."""
    return plaintext if stored is not plaintext and stored != plaintext else None
