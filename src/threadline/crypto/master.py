"""Master keys: what wraps the data keys. The local one is a key from a setting or a file; a KMS plugs in
through the same Protocol (THREADLINE_MASTER_KEY_PROVIDER=module:factory, a callable returning a MasterKey)."""

from __future__ import annotations

import base64
import binascii
import hashlib
import importlib
import os
from dataclasses import dataclass
from typing import Protocol

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from threadline.settings import Settings


class MasterKey(Protocol):
    """Wraps and unwraps data keys. `key_id` is stored with each wrapped key, so a rotation knows which
    master key a data key is still under."""

    @property
    def key_id(self) -> str: ...

    def wrap(self, data_key: bytes, context: bytes) -> bytes: ...

    def unwrap(self, wrapped: bytes, context: bytes) -> bytes: ...


class LocalMasterKey:
    """AES-256-GCM with a 32-byte key held by this process; `context` (the data key's id, tenant and user) is
    the associated data, so a wrapped key cannot be moved to another row."""

    def __init__(self, secret: bytes) -> None:
        if len(secret) != 32:
            raise ValueError(
                "a master key is 32 bytes (base64 of 32 random bytes: `threadline keys generate`)"
            )
        self._cipher = AESGCM(secret)
        self._key_id = "local:" + hashlib.sha256(b"threadline master key\x00" + secret).hexdigest()[:16]

    @property
    def key_id(self) -> str:
        return self._key_id

    def wrap(self, data_key: bytes, context: bytes) -> bytes:
        nonce = os.urandom(12)
        return nonce + self._cipher.encrypt(nonce, data_key, context)

    def unwrap(self, wrapped: bytes, context: bytes) -> bytes:
        return self._cipher.decrypt(wrapped[:12], wrapped[12:], context)


@dataclass(frozen=True)
class MasterKeys:
    """The current master key (wraps new data keys) and earlier ones (still unwrap until rotated away)."""

    current: MasterKey
    previous: tuple[MasterKey, ...] = ()

    def by_id(self, key_id: str) -> MasterKey | None:
        for key in (self.current, *self.previous):
            if key.key_id == key_id:
                return key
        return None


def generate_secret() -> str:
    return base64.b64encode(AESGCM.generate_key(bit_length=256)).decode("ascii")


def _local(encoded: str, where: str) -> LocalMasterKey:
    try:
        secret = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"{where} is not base64") from exc
    try:
        return LocalMasterKey(secret)
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from exc


def master_keys_from(settings: Settings) -> MasterKeys | None:
    """The configured master keys, or None when none is (encryption off). A malformed key is a ValueError
    naming the setting: a server must not start sealing with a key it misread."""
    provider = os.environ.get("THREADLINE_MASTER_KEY_PROVIDER")
    previous = tuple(
        _local(k, f"THREADLINE_MASTER_KEYS_PREVIOUS[{i}]")
        for i, k in enumerate(settings.master_keys_previous)
    )
    if provider:
        module, _, name = provider.partition(":")
        current: MasterKey = getattr(importlib.import_module(module), name)()
        return MasterKeys(current, previous)
    if settings.master_key:
        return MasterKeys(_local(settings.master_key, "THREADLINE_MASTER_KEY"), previous)
    if settings.master_key_file is not None:
        try:
            text = settings.master_key_file.read_text()
        except OSError as exc:
            raise ValueError(f"THREADLINE_MASTER_KEY_FILE cannot be read: {exc}") from exc
        return MasterKeys(_local(text, "THREADLINE_MASTER_KEY_FILE"), previous)
    if previous:
        raise ValueError("THREADLINE_MASTER_KEYS_PREVIOUS is set without THREADLINE_MASTER_KEY")
    return None
