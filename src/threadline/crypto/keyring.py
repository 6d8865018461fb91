"""Data keys: created on first use per tenant and per user, wrapped by the master key, unwrapped once per process
and held (bounded, for `key_cache_seconds`), and the decoders that open sealed values as they are read.

Key rows are read and written on a connection of their own, outside the caller's transaction: a key must be
committed before anything is sealed with it (a key rolled back with the transaction that made it would leave
values sealed under a key nobody has).
"""

from __future__ import annotations

import asyncio
import binascii
import logging
import time
import uuid
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import asyncpg
import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from threadline.crypto import envelope
from threadline.crypto import repository as repo
from threadline.crypto.master import MasterKeys
from threadline.crypto.records import OpenedRecord
from threadline.db import Transaction

log = logging.getLogger("threadline.crypto")

_BODY = len(envelope.PREFIX)


def _pop_oldest(entries: dict[str, tuple[DataKey, str]]) -> tuple[str, tuple[DataKey, str]]:
    oldest = next(iter(entries))
    return oldest, entries.pop(oldest)


_MIN_RAW = 1 + 16 + 12 + 16  # version, key id, nonce, tag

# What a reader gets for content whose key was shredded (or that fails to authenticate): never a 500.
UNAVAILABLE = "[unavailable: this content's key was erased]"
# Stored values a delete or an edit removed, never cached again (Keyring.forget_values): the most recent ones.
FORGOTTEN_KEPT = 10_000
_JSON_MARK = "\\u001etl1:"  # how PostgreSQL writes the mark inside a JSON string
KEYS = "threadline-keys"  # application_name of the key connections


@dataclass(slots=True)
class DataKey:
    id: uuid.UUID
    tenant_id: uuid.UUID
    user_id: uuid.UUID | None
    cipher: AESGCM | None  # None: shredded, or under a master key this process does not have
    loaded_at: float
    aad: bytes = b""  # the associated data of every value it sealed (envelope.associated_data)
    held: bool = True  # False once dropped or replaced: the values it opened are not served from the cache

    def __post_init__(self) -> None:
        self.aad = envelope.associated_data(self.id, self.tenant_id)


def key_context(key_id: uuid.UUID, tenant_id: uuid.UUID, user_id: uuid.UUID | None) -> bytes:
    """The associated data of a wrapped key: a wrapped key moved to another row does not unwrap."""
    return key_id.bytes + tenant_id.bytes + (user_id.bytes if user_id else b"")


class Keyring:
    def __init__(
        self,
        masters: MasterKeys,
        *,
        seal_new: bool = True,
        seal_titles: bool = False,
        cache_size: int = 10_000,
        cache_seconds: float = 30.0,
        plaintext_cache_bytes: int = 0,
    ) -> None:
        self.masters = masters
        self.seal_new = seal_new
        self.seal_titles = seal_titles
        self.cache_size = max(cache_size, 16)
        self.cache_seconds = cache_seconds
        self.misses = 0
        self.dsn: str | None = None
        self.unwraps = 0  # keys unwrapped by this process (tests and the bench read it)
        self._keys: dict[uuid.UUID, DataKey] = {}
        self._by_raw: dict[bytes, DataKey] = {}  # the same keys by the 16 bytes a value names them with
        self._unknown: dict[uuid.UUID, float] = {}
        self._active: dict[tuple[uuid.UUID, uuid.UUID | None], DataKey] = {}
        self._lock: asyncio.Lock | None = None
        # Opened values by their sealed form, with the key that opened them (served only while that very key object
        # is held and fresh: a shred or a re-read replaces it). Insertion order is age: the oldest go first.
        self.plaintext_cache_bytes = plaintext_cache_bytes
        self._plain: dict[str, tuple[DataKey, str]] = {}
        self._plain_bytes = 0
        self._forgotten: dict[str, None] = {}  # values whose text was replaced or removed (forget_values)

    # reading: the decoders (sync, called by asyncpg for every text and JSON value) ----------------------------

    def open_text(self, value: str) -> str:
        if not value.startswith(envelope.PREFIX):
            return value
        return self._open(value, True)

    def open_text_bytes(self, raw: bytes) -> str:
        """The binary text decoder (db.content): a value not starting with the mark is decoded and returned."""
        if raw[:1] != b"\x1e":
            return raw.decode()
        value = raw.decode()
        return self._open(value, True) if value.startswith(envelope.PREFIX) else value

    def open_json(self, raw: str) -> Any:
        value = orjson.loads(raw)
        return self._open_tree(value) if _JSON_MARK in raw else value

    def _fresh(self, key: DataKey | None, now: float) -> bool:
        return key is not None and now - key.loaded_at <= self.cache_seconds

    def _open(self, value: str, fresh_only: bool) -> str:
        """`fresh_only`: a key held longer than `cache_seconds` counts as missing (the decoders); a repair, which
        has just read the keys again, opens with what it holds. The common case (one segment) is inlined: a
        10,000-message tree opens 10,000 values, ~4 us each, most of it AES-GCM itself."""
        hit = self._plain.get(value)
        if hit is not None:
            opener, kept = hit
            if opener.held and (not fresh_only or time.monotonic() - opener.loaded_at <= self.cache_seconds):
                return kept
        if value.find(envelope.MARK, 1) == -1:
            try:
                # Not strict (a third faster): a value that only looks sealed names no key of ours, and AES-GCM
                # authenticates whatever a lenient decoding of a sealed one gives.
                raw = binascii.a2b_base64(value[_BODY:])
            except (binascii.Error, ValueError):
                return value
            key = self._by_raw.get(raw[1:17]) if len(raw) >= _MIN_RAW and raw[0] == envelope.VERSION else None
            if key is not None and (not fresh_only or time.monotonic() - key.loaded_at <= self.cache_seconds):
                if key.cipher is None:
                    return UNAVAILABLE
                try:
                    text = key.cipher.decrypt(raw[17:29], raw[29:], key.aad).decode()
                except (InvalidTag, UnicodeDecodeError):
                    log.warning("a value sealed with data key %s does not authenticate", key.id)
                    return UNAVAILABLE
                if self.plaintext_cache_bytes:
                    self._keep(value, key, text)
                return text
        found = envelope.segments(value)
        if found is None:
            return value
        now = time.monotonic()
        out: list[str] = []
        for segment in found:
            key = self._keys.get(segment.key_id)
            if key is None or (fresh_only and not self._fresh(key, now)):
                seen = self._unknown.get(segment.key_id)
                if seen is None or now - seen > self.cache_seconds:
                    self.misses += 1
                return value  # not ours (plaintext that looks sealed), or the key is being loaded
            if key.cipher is None:
                return UNAVAILABLE
            try:
                out.append(envelope.open_segment(key.cipher, key.tenant_id, segment))
            except (InvalidTag, UnicodeDecodeError):
                log.warning("a value sealed with data key %s does not authenticate", key.id)
                return UNAVAILABLE
        return "".join(out)

    def _keep(self, value: str, key: DataKey, text: str) -> None:
        size = len(value) + len(text) + 200  # the two strings' bodies and the entry around them, roughly
        if size > self.plaintext_cache_bytes // 8 or value in self._forgotten:
            return  # a big value would push out many small ones; a forgotten one is being removed
        stale = self._plain.pop(value, None)
        if stale is not None:
            self._plain_bytes -= size
        self._plain[value] = (key, text)
        self._plain_bytes += size
        while self._plain_bytes > self.plaintext_cache_bytes and self._plain:
            old_value, (_, old_text) = _pop_oldest(self._plain)
            self._plain_bytes -= len(old_value) + len(old_text) + 200
        self._expire(time.monotonic())

    def _expire(self, now: float) -> None:
        """The oldest entries whose key is no longer held, or was loaded over `cache_seconds` ago, leave: they are
        never served again (a stale key is read again, as a new object). So an opened text stays in memory at
        most about twice `cache_seconds` after its key was read, in every process that goes on reading: a text
        deleted by another process (which cannot tell this one) goes within that time too."""
        plain = self._plain
        while plain:
            old_value, (opener, old_text) = next(iter(plain.items()))
            if opener.held and now - opener.loaded_at <= self.cache_seconds:
                return
            del plain[old_value]
            self._plain_bytes -= len(old_value) + len(old_text) + 200

    def _open_tree(self, value: Any, fresh_only: bool = True) -> Any:
        if isinstance(value, str):
            return self._open(value, fresh_only) if value.startswith(envelope.PREFIX) else value
        if isinstance(value, dict):
            return {k: self._open_tree(v, fresh_only) for k, v in value.items()}
        if isinstance(value, list):
            return [self._open_tree(v, fresh_only) for v in value]
        return value

    # reading: what the decoders could not open -----------------------------------------------------------------

    def connected(self, dsn: str) -> None:
        if self.dsn is None:
            self.dsn = dsn

    async def repair(self, value: Any) -> Any:
        """(The misses counted may be another statement's, read meanwhile: a result holding no value left sealed
        is returned as it is.)"""
        wanted: set[uuid.UUID] = set()
        if not self._collect(value, wanted, time.monotonic()):
            return value
        if wanted:
            await self.load(wanted)
        return self._reopen(value)

    def _collect(self, value: Any, wanted: set[uuid.UUID], now: float) -> bool:
        """Whether `value` holds a sealed string (collecting the ids of the keys it lacks into `wanted`)."""
        if isinstance(value, str):
            found = envelope.segments(value)
            for segment in found or ():
                if not self._fresh(self._keys.get(segment.key_id), now):
                    wanted.add(segment.key_id)
            return bool(found)
        if isinstance(value, dict):
            values: Any = value.values()
        elif isinstance(value, asyncpg.Record | OpenedRecord):
            values = value.values()
        elif isinstance(value, list | tuple):
            values = value
        else:
            return False
        sealed = False
        for v in values:
            sealed = self._collect(v, wanted, now) or sealed
        return sealed

    def _reopen(self, value: Any) -> Any:
        if isinstance(value, list):
            return [self._reopen(v) for v in value]
        if isinstance(value, asyncpg.Record | OpenedRecord):
            values = [self._open_tree(v, False) for v in value.values()]
            return OpenedRecord(list(value.keys()), values)
        return self._open_tree(value, False)

    async def load(self, ids: set[uuid.UUID]) -> None:
        """Read and unwrap these keys (one statement): unknown ids are remembered as not ours for a while."""
        async with self._key_lock():
            now = time.monotonic()
            missing = [i for i in ids if not self._fresh(self._keys.get(i), now)]
            if not missing:
                return
            async with self._connection() as db:
                rows = await repo.keys_by_ids(db, missing)
            for row in rows:
                self._remember(row)
            for key_id in set(missing) - {r["id"] for r in rows}:
                self._unknown[key_id] = now
                if len(self._unknown) > self.cache_size:
                    self._unknown.pop(next(iter(self._unknown)))

    def _remember(self, row: Any) -> DataKey:
        cipher: AESGCM | None = None
        if row["wrapped"] is not None:
            master = self.masters.by_id(row["master_key_id"])
            if master is None:
                log.error("data key %s is wrapped by master key %s, which is not configured", row["id"],
                          row["master_key_id"])  # fmt: skip
            else:
                context = key_context(row["id"], row["tenant_id"], row["user_id"])
                cipher = AESGCM(master.unwrap(bytes(row["wrapped"]), context))
                self.unwraps += 1
        key = DataKey(row["id"], row["tenant_id"], row["user_id"], cipher, time.monotonic())
        replaced = self._keys.pop(key.id, None)
        if replaced is not None:
            replaced.held = False
        self._keys[key.id] = key
        self._by_raw[key.id.bytes] = key
        if len(self._keys) > self.cache_size:
            oldest = self._keys.pop(next(iter(self._keys)))  # the oldest loaded
            oldest.held = False
            self._by_raw.pop(oldest.id.bytes, None)
        return key

    # writing ---------------------------------------------------------------------------------------------------

    async def seal(self, tenant_id: uuid.UUID, text: str, user_id: uuid.UUID | None = None) -> str:
        """`text` sealed with the active key of the user (or of the tenant); unchanged when sealing is off or
        the text is empty (a tombstone stays '')."""
        if not self.seal_new or not text:
            return text
        key = await self.active_key(tenant_id, user_id)
        assert key.cipher is not None
        return envelope.seal(key.cipher, key.id, tenant_id, text)

    async def seal_many(
        self, tenant_id: uuid.UUID, texts: list[str], user_id: uuid.UUID | None = None
    ) -> list[str]:
        if not self.seal_new:
            return texts
        key = await self.active_key(tenant_id, user_id)
        assert key.cipher is not None
        return [envelope.seal(key.cipher, key.id, tenant_id, t) if t else t for t in texts]

    def seal_tree(
        self, key: DataKey, value: Any, plain_keys: frozenset[str] = frozenset(), skip_sealed: bool = False
    ) -> Any:
        """`value` (JSON) with every non-empty string sealed with `key`, but those under a key in `plain_keys` (and,
        with `skip_sealed`, those sealed already)."""
        assert key.cipher is not None
        if isinstance(value, str):
            if not value or (skip_sealed and value.startswith(envelope.PREFIX)):
                return value
            return envelope.seal(key.cipher, key.id, key.tenant_id, value)
        if isinstance(value, dict):
            return {
                k: v
                if k in plain_keys and isinstance(v, str)
                else self.seal_tree(key, v, plain_keys, skip_sealed)
                for k, v in value.items()
            }
        if isinstance(value, list):
            return [self.seal_tree(key, v, plain_keys, skip_sealed) for v in value]
        return value

    async def seal_bytes(self, tenant_id: uuid.UUID, data: bytes) -> bytes:
        if not self.seal_new or not data:
            return data
        key = await self.active_key(tenant_id, None)
        assert key.cipher is not None
        return envelope.seal_bytes(key.cipher, key.id, tenant_id, data)

    async def open_bytes(self, data: bytes) -> bytes | None:
        """The plaintext of stored bytes (plain ones as they are); None when their key was shredded or they do not
        authenticate."""
        segment = envelope.bytes_segment(data)
        if segment is None:
            return data
        key = self._keys.get(segment.key_id)
        if key is None or not self._fresh(key, time.monotonic()):
            await self.load({segment.key_id})
            key = self._keys.get(segment.key_id)
        if key is None:
            return data  # not ours: bytes that happen to start with the mark
        if key.cipher is None:
            return None
        try:
            return envelope.open_bytes(key.cipher, key.tenant_id, segment)
        except InvalidTag:
            log.warning("bytes sealed with data key %s do not authenticate", key.id)
            return None

    async def active_key(self, tenant_id: uuid.UUID, user_id: uuid.UUID | None) -> DataKey:
        scope = (tenant_id, user_id)
        key = self._active.get(scope)
        if key is not None and self._fresh(key, time.monotonic()) and key.cipher is not None:
            return key
        async with self._key_lock():
            async with self._connection() as db:
                row = await repo.active_key(db, tenant_id, user_id)
                if row is None or row["wrapped"] is None:
                    secret = AESGCM.generate_key(bit_length=256)
                    key_id = uuid.uuid4()
                    wrapped = self.masters.current.wrap(secret, key_context(key_id, tenant_id, user_id))
                    await repo.insert_key(
                        db, tenant_id, user_id, key_id, self.masters.current.key_id, wrapped
                    )
                    row = await repo.active_key(db, tenant_id, user_id)
                    assert row is not None
            key = self._remember(row)
            if key.cipher is None:
                raise RuntimeError(
                    f"the active data key {key.id} cannot be unwrapped with the configured master keys"
                )
            self._active[scope] = key
            if len(self._active) > self.cache_size:
                self._active.pop(next(iter(self._active)))
            return key

    def cached(self, key_id: uuid.UUID) -> DataKey | None:
        return self._keys.get(key_id)

    def open_loaded(self, value: str) -> str:
        """`value` opened with the keys held, however long ago they were loaded (a re-encryption, which has just
        loaded the keys a batch names): the plaintext, `value` itself when it is not sealed with a key held, or
        UNAVAILABLE when its key was shredded."""
        return self._open(value, False) if value.startswith(envelope.PREFIX) else value

    def forget_active(self) -> None:
        """The active keys were retired (rotation): the next seal asks the database which key is active."""
        self._active.clear()

    def forget(self, ids: list[uuid.UUID]) -> None:
        """Drop these keys from this process (shredded or retired): the next read loads them again (and opened
        values of theirs are not served: the cache serves only for the very key object that opened them)."""
        for key_id in ids:
            dropped = self._keys.pop(key_id, None)
            if dropped is not None:
                dropped.held = False
            self._by_raw.pop(key_id.bytes, None)
        for scope, key in list(self._active.items()):
            if key.id in ids:
                del self._active[scope]
        gone = set(ids)
        for value, (key, text) in list(self._plain.items()):
            if key.id in gone:  # a shredded key's opened text must not stay in memory either
                del self._plain[value]
                self._plain_bytes -= len(value) + len(text) + 200

    def caching(self) -> bool:
        """Whether the cache of opened values holds anything."""
        return bool(self._plain)

    def forget_values(self, values: Iterable[str]) -> None:
        """Drop the opened text of these stored values (a message's content, edits and chunks before they are
        replaced or removed): a deleted text does not stay in this process until pushed out."""
        for value in values:
            dropped = self._plain.pop(value, None)
            if dropped is not None:
                self._plain_bytes -= len(value) + len(dropped[1]) + 200
            # Until the writer commits, other readers still read the value (and would cache it again): it is
            # not cached from now on (the most recent FORGOTTEN_KEPT such values are remembered).
            self._forgotten[value] = None
            if len(self._forgotten) > FORGOTTEN_KEPT:
                del self._forgotten[next(iter(self._forgotten))]

    # plumbing --------------------------------------------------------------------------------------------------

    def _key_lock(self) -> asyncio.Lock:
        if self._lock is None:
            self._lock = asyncio.Lock()
        return self._lock

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[Transaction]:
        if self.dsn is None:
            raise RuntimeError("encryption at rest: no database connected yet to read data keys from")
        # No named prepared statements: behind PgBouncer in transaction mode they would stay on a server connection
        # this short-lived one no longer owns (THREADLINE_DATABASE_POOLER); a few statements lose nothing by it.
        conn = await asyncpg.connect(
            self.dsn, server_settings={"application_name": KEYS}, statement_cache_size=0
        )
        try:
            yield Transaction(conn)
        finally:
            await conn.close()
