"""The sealed form of a text value: what a column or a JSON string holds once encrypted.

    "\\x1etl1:" + base64( version (1 byte) | data key id (16 bytes) | nonce (12 bytes) | ciphertext + tag (16) )

AES-256-GCM; the associated data is the version, the key id and the key's tenant id, so a value only opens
with the key it names, and that key belongs to one tenant. Text (base64, 4/3 of the bytes) rather than bytea:
the same columns and JSON payloads hold plaintext and sealed values side by side (a deployment that turns
encryption on, a rotation half done), every reader passes a sealed value through untouched until it is opened,
and the PostgreSQL text decoder can open it (crypto.keyring). The mark (U+001E, record separator) is not in
the base64 alphabet, so sealed values concatenate: a streamed message appends one sealed segment per delta in
SQL (`content || $segment`) without reading what it has, and opens as the segments' texts joined.
"""

from __future__ import annotations

import base64
import binascii
import os
import uuid
from dataclasses import dataclass

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

MARK = "\x1e"
TAG = "tl1:"
PREFIX = MARK + TAG
VERSION = 1
_HEADER = 1 + 16 + 12
_MIN_BYTES = _HEADER + 16


@dataclass(frozen=True, slots=True)
class Segment:
    key_id: uuid.UUID
    nonce: bytes
    ciphertext: bytes


def is_sealed(value: str) -> bool:
    return value.startswith(PREFIX)


def associated_data(key_id: uuid.UUID, tenant_id: uuid.UUID) -> bytes:
    return bytes((VERSION,)) + key_id.bytes + tenant_id.bytes


def seal(cipher: AESGCM, key_id: uuid.UUID, tenant_id: uuid.UUID, plaintext: str) -> str:
    nonce = os.urandom(12)
    body = cipher.encrypt(nonce, plaintext.encode(), associated_data(key_id, tenant_id))
    return PREFIX + base64.b64encode(bytes((VERSION,)) + key_id.bytes + nonce + body).decode("ascii")


def segments(value: str) -> list[Segment] | None:
    """The sealed segments of `value`, or None if it is not (wholly) sealed: plaintext that happens to start
    with the mark is text like any other."""
    if not value.startswith(PREFIX):
        return None
    found: list[Segment] = []
    for piece in value.split(MARK)[1:]:
        if not piece.startswith(TAG):
            return None
        try:
            raw = base64.b64decode(piece[len(TAG) :], validate=True)
        except (binascii.Error, ValueError):
            return None
        if len(raw) < _MIN_BYTES or raw[0] != VERSION:
            return None
        found.append(Segment(uuid.UUID(bytes=raw[1:17]), raw[17:_HEADER], raw[_HEADER:]))
    return found


def open_segment(cipher: AESGCM, tenant_id: uuid.UUID, segment: Segment) -> str:
    """The plaintext; raises cryptography's InvalidTag if the value was altered or is not this key's."""
    return cipher.decrypt(
        segment.nonce, segment.ciphertext, associated_data(segment.key_id, tenant_id)
    ).decode()


# Bytes (file chunks): the same body, raw, after a mark of its own (a bytea column holds it as is).
BYTES_MARK = b"\x1etlb1"


# What sealing adds to a block of bytes: the mark, version, key id, nonce and tag.
BYTES_OVERHEAD = len(BYTES_MARK) + _MIN_BYTES


def seal_bytes(cipher: AESGCM, key_id: uuid.UUID, tenant_id: uuid.UUID, data: bytes) -> bytes:
    nonce = os.urandom(12)
    body = cipher.encrypt(nonce, data, associated_data(key_id, tenant_id))
    return BYTES_MARK + bytes((VERSION,)) + key_id.bytes + nonce + body


def bytes_segment(data: bytes) -> Segment | None:
    """The sealed body of `data`, or None when it is stored plain."""
    if not data.startswith(BYTES_MARK):
        return None
    raw = data[len(BYTES_MARK) :]
    if len(raw) < _MIN_BYTES or raw[0] != VERSION:
        return None
    return Segment(uuid.UUID(bytes=raw[1:17]), raw[17:_HEADER], raw[_HEADER:])


def open_bytes(cipher: AESGCM, tenant_id: uuid.UUID, segment: Segment) -> bytes:
    return cipher.decrypt(segment.nonce, segment.ciphertext, associated_data(segment.key_id, tenant_id))
