"""Where sealed content is opened as it is read (crypto/ installs the hooks; db knows no keys).

With encryption at rest on, every pooled connection decodes `text` and `json`/`jsonb` through the installed
hooks, so each reader of the database (repositories, loaders, workers, exports) gets plaintext without opening
anything itself, and no read path can forget to. A decoder cannot wait for the database, so a value sealed
with a data key this process has not unwrapped yet comes back sealed and counts a miss; the statement's
wrapper (database.py) then has the hooks load those keys (one statement for all of them) and open what is left.
"""

from __future__ import annotations

from typing import Any, Protocol

import asyncpg


class ContentHooks(Protocol):
    # Bumped by the decoders whenever a value is left sealed for want of its key.
    misses: int

    def open_text(self, value: str) -> str: ...

    def open_text_bytes(self, raw: bytes) -> str:
        """A text value as PostgreSQL sends it in binary (UTF-8), opened."""
        ...

    def open_json(self, raw: str) -> Any: ...

    async def repair(self, value: Any) -> Any:
        """`value` (rows, a row or a scalar) with the values still sealed opened, their keys loaded first."""
        ...

    def connected(self, dsn: str) -> None:
        """A pool to `dsn` was opened (where the hooks read their keys from)."""
        ...


_hooks: ContentHooks | None = None


def install(hooks: ContentHooks | None) -> None:
    """Open sealed content on every connection made from now on (None: stop)."""
    global _hooks
    _hooks = hooks


def installed() -> ContentHooks | None:
    return _hooks


async def install_codecs(conn: asyncpg.Connection) -> None:
    hooks = _hooks
    if hooks is None:
        return
    # Binary, as asyncpg's own text codec: COPY (the imports' bulk path) has no text format to fall back on.
    await conn.set_type_codec(
        "text",
        encoder=_encode_text,
        decoder=hooks.open_text_bytes,
        schema="pg_catalog",
        format="binary",
    )
    for name in ("json", "jsonb"):
        await conn.set_type_codec(name, encoder=_dump, decoder=hooks.open_json, schema="pg_catalog")


def _encode_text(value: Any) -> bytes:
    return (value if isinstance(value, str) else str(value)).encode()


def _dump(value: Any) -> str:
    import orjson

    return orjson.dumps(value).decode()


def misses() -> int:
    hooks = _hooks
    return hooks.misses if hooks is not None else 0


async def repaired(value: Any, before: int) -> Any:
    """`value` as read, or opened again if a decoder missed a key while it was read (`before`: misses() then)."""
    hooks = _hooks
    if hooks is None or hooks.misses == before:
        return value
    return await hooks.repair(value)
