"""Stream cursors as the API shows them: opaque, per tenant (issue 12 item 14).

Inside the server a cursor is a position in the one global event sequence (`stream_event.id`): the hub,
the log replay and SLOW_CONSUMER compare plain numbers. Shown as is, a tenant could count the events of the
whole platform between two of its own. So every cursor leaving the server is `c1.` + 24 hex digits:

- the position (64 bits) through a keyed permutation: a 4-round Feistel network over its two 32-bit halves,
  each round's function HMAC-SHA256(key, round || half), so equal positions give equal cursors (a resume on
  any process, the same event seen twice) and nothing else about the position shows;
- a 4-byte tag, HMAC-SHA256(key, position) truncated: a cursor of another tenant (or an altered one)
  decodes to some position whose tag does not match, and is refused.

The key is per tenant, HMAC-SHA256(server secret, tenant id). The server secret is
THREADLINE_CURSOR_SECRET, or the random one stored in `stream_cursor_key` (every process reads the same
row). Changing it invalidates the cursors clients hold: they get BAD_USER_INPUT and start afresh.

Numeric cursors (the form before this one) are still accepted as `since`, but only up to the position
where opaque cursors began (`numeric_through`, stored with the secret): a numeric cursor above it was never
issued, and accepting any number would let a client find the global position of its own events by bisection
(a replay after N shows which of them are above N), which is what the encoding hides.
"""

from __future__ import annotations

import hmac
import secrets
import uuid

from threadline.db import Executor
from threadline.errors import ErrorCode, ThreadlineError, bad_input
from threadline.settings import Settings
from threadline.streaming import repository

PREFIX = "c1."
_HEX_DIGITS = 24  # 8 bytes of permuted position, 4 bytes of tag
_ROUNDS = (b"\x00", b"\x01", b"\x02", b"\x03")
_MASK32 = 0xFFFFFFFF
_MAX_TENANT_KEYS = 100_000  # derived keys kept; past it the memo starts over (each is one HMAC to redo)
MIN_SECRET_LENGTH = 16


def _round(key: bytes, tag: bytes, half: int) -> int:
    return int.from_bytes(hmac.digest(key, tag + half.to_bytes(4, "big"), "sha256")[:4], "big")


class CursorCodec:
    """Encodes positions as one tenant's opaque cursors and decodes them back. Pure and cheap (five HMACs an
    encode): the hub's rendering encodes once per event (streaming.fanout.SharedEvents)."""

    def __init__(self, secret: bytes, numeric_through: int) -> None:
        self._secret = secret
        self.numeric_through = numeric_through  # the highest position a numeric cursor may name
        self._keys: dict[uuid.UUID, bytes] = {}

    def _key(self, tenant_id: uuid.UUID) -> bytes:
        key = self._keys.get(tenant_id)
        if key is None:
            if len(self._keys) >= _MAX_TENANT_KEYS:
                self._keys.clear()
            key = self._keys[tenant_id] = hmac.digest(
                self._secret, b"threadline-cursor\x00" + tenant_id.bytes, "sha256"
            )
        return key

    def encode(self, tenant_id: uuid.UUID, position: int) -> str:
        key = self._key(tenant_id)
        left, right = position >> 32 & _MASK32, position & _MASK32
        for tag in _ROUNDS:
            left, right = right, left ^ _round(key, tag, right)
        tag_bytes = hmac.digest(key, b"t" + position.to_bytes(8, "big"), "sha256")[:4]
        return PREFIX + ((left << 32 | right).to_bytes(8, "big") + tag_bytes).hex()

    def decode(self, tenant_id: uuid.UUID, cursor: str) -> int:
        """The position of one of this tenant's cursors (BAD_USER_INPUT for anything else); a numeric cursor
        is the position itself, if such a cursor was ever issued (CURSOR_EXPIRED otherwise)."""
        if cursor.isascii() and cursor.isdigit() and len(cursor) <= 18:
            position = int(cursor)
            if position > self.numeric_through:
                raise ThreadlineError(
                    ErrorCode.CURSOR_EXPIRED,
                    "Numeric cursors are no longer issued; refetch the data and subscribe with `streamCursor`",
                )
            return position
        body = cursor[len(PREFIX) :] if cursor.startswith(PREFIX) else ""
        try:
            raw = bytes.fromhex(body) if len(body) == _HEX_DIGITS else b""
        except ValueError:
            raw = b""
        if not raw:
            raise _malformed()
        key = self._key(tenant_id)
        block = int.from_bytes(raw[:8], "big")
        left, right = block >> 32, block & _MASK32
        for tag in reversed(_ROUNDS):
            left, right = right ^ _round(key, tag, left), left
        position = left << 32 | right
        expected = hmac.digest(key, b"t" + position.to_bytes(8, "big"), "sha256")[:4]
        if not hmac.compare_digest(expected, raw[8:]):
            raise _malformed()  # another tenant's, altered, or from before the secret changed
        return position


def _malformed() -> ThreadlineError:
    return bad_input("Malformed `since`: pass the `cursor` of an event you received", argument="since")


async def load_codec(db: Executor, settings: Settings) -> CursorCodec:
    """The codec every process agrees on: THREADLINE_CURSOR_SECRET, else the stored secret (created by the
    migration; if the row is gone, the first process to notice writes a new one and every process reads it
    back). `numeric_through` always comes from the row."""
    row = await repository.cursor_key(db)
    if row is None:
        await repository.create_cursor_key(db, secrets.token_hex(32))
        row = await repository.cursor_key(db)
        assert row is not None, "stream_cursor_key: the row just written is gone"
    secret = settings.cursor_secret or row["secret"]
    if len(secret) < MIN_SECRET_LENGTH:
        raise ValueError(f"THREADLINE_CURSOR_SECRET must be at least {MIN_SECRET_LENGTH} characters")
    return CursorCodec(secret.encode(), int(row["numeric_through"]))
