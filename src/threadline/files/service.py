"""File rules: storing an upload (deduplicated per tenant, within the tenant's quota), who may download a file,
attaching files to messages, and reading the bytes back from PostgreSQL, the directory or an S3-compatible store.

Access: before a message holds it, a file is its uploader's alone; once attached, whoever may read one of the
(not deleted) messages holding it may download it, and no one else (its uploader included). A file no message
holds any more is deleted with its bytes (migration triggers), as is every upload of an erased user.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

import asyncpg

from threadline import crypto
from threadline.auth import repository as users
from threadline.auth.principal import Principal, Role
from threadline.conversations.access import Access, require
from threadline.db import Database, Executor
from threadline.errors import ErrorCode, ThreadlineError, content_unavailable, not_found
from threadline.files import repository as repo
from threadline.files import s3
from threadline.ids import Kind, parse_id
from threadline.settings import Settings

log = logging.getLogger("threadline.files")
CHUNK_BYTES = 1024 * 1024
FILENAME_MAX_CHARS = 255


@dataclass(frozen=True)
class Upload:
    """An upload read in full (into `spool`), with what was learnt while reading it."""

    filename: str
    size: int
    sha256: bytes
    content_type: str
    spool: IO[bytes]


class TooLarge(ThreadlineError):
    """413: the upload, or the tenant's files with it, would pass a limit."""

    def __init__(self, message: str, limit_name: str, limit: int) -> None:
        super().__init__(ErrorCode.BAD_USER_INPUT, message, limitName=limit_name, limit=limit)


def clean_filename(raw: str | None) -> str:
    """The name kept for a file: its last path segment, without control characters, at most 255 characters."""
    name = (raw or "").replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(c for c in name if c.isprintable()).strip()
    return name[:FILENAME_MAX_CHARS] or "file"


def directory(settings: Settings) -> Path:
    return settings.file_directory or settings.data_dir / "files"


def blob_path(settings: Settings, tenant_id: uuid.UUID, sha256: bytes) -> Path:
    digest = sha256.hex()
    return directory(settings) / tenant_id.hex / digest[:2] / digest


def _write_blob(
    settings: Settings, tenant_id: uuid.UUID, upload: Upload, seal: Callable[[bytes], bytes] | None = None
) -> Path:
    """The upload's bytes in the directory, under their checksum, written whole before they are named; with
    `seal` (encryption at rest), each block of CHUNK_BYTES sealed (SEALED_RECORD bytes each, the last shorter)."""
    target = blob_path(settings, tenant_id, upload.sha256)
    target.parent.mkdir(parents=True, exist_ok=True)
    upload.spool.seek(0)
    with tempfile.NamedTemporaryFile(dir=target.parent, delete=False) as out:
        while block := upload.spool.read(CHUNK_BYTES):
            out.write(seal(block) if seal is not None else block)
        out.flush()
        os.fsync(out.fileno())
    os.replace(out.name, target)
    return target


def _chunks_of(spool: IO[bytes]) -> Iterable[bytes]:
    spool.seek(0)
    while block := spool.read(CHUNK_BYTES):
        yield block


async def store(
    db: Database, settings: Settings, principal: Principal, upload: Upload
) -> tuple[asyncpg.Record, bool]:
    """A new file of the caller naming the tenant's blob with the upload's checksum, stored now if it is new
    (within the quota). Returns the file row and whether its bytes were already stored."""
    written: Path | None = None
    uploaded: str | None = None  # the object put in the S3-compatible store, if any
    try:
        async with db.transaction() as tx:
            await repo.lock_tenant_files(tx, principal.tenant_id)
            blob = await repo.blob_by_checksum(tx, principal.tenant_id, upload.sha256)
            deduplicated = blob is not None
            if blob is None:
                quota = settings.file_tenant_quota_bytes
                if await repo.stored_bytes(tx, principal.tenant_id) + upload.size > quota:
                    raise TooLarge(
                        f"The tenant's files would pass its quota of {quota} bytes (THREADLINE_FILE_TENANT_QUOTA_BYTES)",
                        "fileQuotaBytes",
                        quota,
                    )
                storage = settings.file_storage
                blob_id = await repo.insert_blob(
                    tx, principal.tenant_id, upload.sha256, upload.size, upload.content_type, storage
                )
                # Encryption at rest (crypto/): the bytes are sealed in every store, with the tenant's key.
                seal = await crypto.bytes_sealer(principal.tenant_id) if storage != "postgres" else None
                if storage == "directory":
                    # Off the event loop: up to THREADLINE_FILE_MAX_BYTES written and synced.
                    written = await asyncio.to_thread(
                        _write_blob, settings, principal.tenant_id, upload, seal
                    )
                elif storage == "s3":
                    key = s3.object_key(settings, principal.tenant_id, upload.sha256)
                    body = b"".join(seal(b) if seal else b for b in _chunks_of(upload.spool))
                    checksum = hashlib.sha256(body).hexdigest() if seal else upload.sha256.hex()
                    await s3.ObjectStore(settings).put(key, body, checksum)
                    uploaded = key
                else:
                    for seq, block in enumerate(_chunks_of(upload.spool)):
                        await repo.insert_chunk(tx, principal.tenant_id, blob_id, seq, block)
            else:
                blob_id = blob["id"]
            row = await repo.insert_file(tx, principal.tenant_id, blob_id, principal.user_id, upload.filename)
    except BaseException:
        if written is not None:  # never committed: nothing names these bytes
            with contextlib.suppress(OSError):
                written.unlink()
        if uploaded is not None:
            with contextlib.suppress(Exception):
                await s3.ObjectStore(settings).delete(uploaded)
        raise
    return row, deduplicated


async def readable(db: Executor, principal: Principal, file_id: uuid.UUID) -> asyncpg.Record:
    """The file if the caller may download it; NOT_FOUND otherwise (whatever the reason)."""
    row = await repo.file(db, principal.tenant_id, file_id)
    if row is None:
        raise not_found("File")
    if row["attached_at"] is None:
        if row["uploaded_by"] != principal.user_id:
            raise not_found("File")
        return row
    # One readable holder, found in one statement (checking each holding conversation in turn cost statements by
    # the thousand for a file held in thousands of conversations), then the access rule's own check of it (a
    # non-participant's read is audited).
    conversation_id = await repo.readable_holder(db, principal, file_id)
    if conversation_id is None:
        raise not_found("File")
    try:
        await require(db, principal, conversation_id, Access.READ)
    except ThreadlineError as exc:
        raise not_found("File") from exc
    return row


async def read_bytes(db: Database, settings: Settings, row: Mapping[str, Any]) -> AsyncIterator[bytes]:
    """The file's bytes, a chunk at a time (one statement per chunk: a large file never sits in memory).
    CONTENT_UNAVAILABLE when they were sealed with a key since shredded."""
    if row["storage"] == "s3":
        stored = s3.ObjectStore(settings).get(s3.object_key(settings, row["tenant_id"], bytes(row["sha256"])))
        async for block in _opened(stored):
            yield block
        return
    if row["storage"] == "directory":
        async for block in _opened(
            _directory_blocks(blob_path(settings, row["tenant_id"], bytes(row["sha256"])))
        ):
            yield block
        return
    seq = 0
    while True:
        chunk = await repo.chunk(db, row["tenant_id"], row["blob_id"], seq)
        if chunk is None:
            return
        yield chunk
        seq += 1


async def _directory_blocks(path: Path) -> AsyncIterator[bytes]:
    with path.open("rb") as source:
        while block := source.read(SEALED_RECORD):
            yield block


# A block of CHUNK_BYTES as the directory and S3 stores hold it when sealed (encryption at rest, crypto/).
SEALED_RECORD = CHUNK_BYTES + crypto.BYTES_OVERHEAD


async def _opened(stored: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """Bytes of the directory or S3 store as they were uploaded. A sealed file is a run of sealed records of
    SEALED_RECORD bytes (the last shorter), however the store cuts its reads; one stored plain (before
    encryption was on) passes as it is. Whether it is sealed is told by its first bytes."""
    buffer = bytearray()
    sealed: bool | None = None
    async for block in stored:
        if sealed is False:
            yield block
            continue
        buffer += block
        if sealed is None:
            if len(buffer) < crypto.BYTES_OVERHEAD:
                continue
            sealed = crypto.sealed_bytes(bytes(buffer[: crypto.BYTES_OVERHEAD]))
            if not sealed:
                yield bytes(buffer)
                buffer.clear()
                continue
        while len(buffer) >= SEALED_RECORD:
            yield await _open_record(bytes(buffer[:SEALED_RECORD]))
            del buffer[:SEALED_RECORD]
    if buffer:
        yield await _open_record(bytes(buffer)) if sealed else bytes(buffer)


async def _open_record(record: bytes) -> bytes:
    opened = await crypto.open_bytes(record)
    if opened is None:
        raise content_unavailable("This file's key was erased (encryption at rest): its bytes cannot be read")
    return opened


# Re-sealing the directory and S3 stores (crypto.rotation: `keys rotate --reencrypt`, `keys seal`) ---------------


async def stored_blob(settings: Settings, tenant_id: uuid.UUID, sha256: bytes, storage: str) -> bytes | None:
    """A directory or S3 blob's bytes as the store holds them (sealed or not), whole (at most
    THREADLINE_FILE_MAX_BYTES and its records' overhead); None when the store does not have them (purged)."""
    if storage == "s3":
        try:
            return b"".join(
                [b async for b in s3.ObjectStore(settings).get(s3.object_key(settings, tenant_id, sha256))]
            )
        except s3.S3Missing:
            return None
    try:
        return await asyncio.to_thread(blob_path(settings, tenant_id, sha256).read_bytes)
    except FileNotFoundError:
        return None


async def replace_blob(
    settings: Settings, tenant_id: uuid.UUID, sha256: bytes, storage: str, data: bytes
) -> None:
    """The blob's stored bytes replaced whole at once (a new object, or a file renamed over the old one): a
    reader sees the old bytes or the new, never a mix. The caller holds the tenant's file lock."""
    if storage == "s3":
        key = s3.object_key(settings, tenant_id, sha256)
        await s3.ObjectStore(settings).put(key, data, hashlib.sha256(data).hexdigest())
        return
    await asyncio.to_thread(_replace_file, blob_path(settings, tenant_id, sha256), data)


def _replace_file(target: Path, data: bytes) -> None:
    with tempfile.NamedTemporaryFile(dir=target.parent, delete=False) as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())
    os.replace(out.name, target)


def stored_records(data: bytes) -> list[bytes]:
    """A sealed blob's records (SEALED_RECORD bytes each, the last shorter), as readers cut them."""
    return [data[at : at + SEALED_RECORD] for at in range(0, len(data), SEALED_RECORD)]


def plain_blocks(data: bytes) -> list[bytes]:
    """A plain blob's blocks as an upload seals them (CHUNK_BYTES each, the last shorter)."""
    return [data[at : at + CHUNK_BYTES] for at in range(0, len(data), CHUNK_BYTES)]


def file_ids_of(parts: Iterable[Mapping[str, Any]]) -> list[uuid.UUID]:
    """This server's file ids named by message parts, in order, once each (other ids are left alone: the
    parts model keeps a file id opaque, e.g. a provider's own)."""
    found: list[uuid.UUID] = []
    for part in parts:
        parsed = parse_id(str(part.get("file_id") or ""))
        if parsed is not None and parsed[0] is Kind.FILE and parsed[1] not in found:
            found.append(parsed[1])
    return found


async def attach_parts(
    tx: Executor,
    tenant_id: uuid.UUID,
    author_id: uuid.UUID | None,
    message_id: uuid.UUID,
    parts: Iterable[Mapping[str, Any]] | None,
) -> None:
    """The message holds the files its parts name. Its author must have uploaded each one that is not attached
    yet, or be able to download it already: NOT_FOUND otherwise (a file id is no capability)."""
    wanted = file_ids_of(parts or ())
    if not wanted:
        return
    rows = {r["id"]: r for r in await repo.files(tx, tenant_id, wanted)}
    for file_id in wanted:
        row = rows.get(file_id)
        if row is None or author_id is None:
            raise not_found("File")
        if row["attached_at"] is None and row["uploaded_by"] == author_id:
            continue
        principal = await _author(tx, tenant_id, author_id)
        await readable(tx, principal, file_id)
    await repo.attach(tx, tenant_id, message_id, wanted)


async def _author(tx: Executor, tenant_id: uuid.UUID, user_id: uuid.UUID) -> Principal:
    user = await users.user_by_id(tx, tenant_id, user_id)
    if user is None:
        raise not_found("File")
    return Principal(tenant_id, user_id, Role(user["role"]), user["team"])


async def purge_gone(db: Database, settings: Settings, limit: int = 1000) -> int:
    """Removes the bytes of blobs deleted in the database from this process's store (the directory, or the
    S3-compatible bucket), unless the same bytes were stored again since; returns how many were handled."""
    handled = 0
    storage = settings.file_storage
    for gone in await repo.gone_blobs(db, storage, limit):
        async with db.transaction() as tx:
            await repo.lock_tenant_files(tx, gone["tenant_id"])
            sha256 = bytes(gone["sha256"])
            if await repo.blob_by_checksum(tx, gone["tenant_id"], sha256) is None:
                if storage == "s3":
                    await s3.ObjectStore(settings).delete(s3.object_key(settings, gone["tenant_id"], sha256))
                else:
                    with contextlib.suppress(FileNotFoundError):
                        blob_path(settings, gone["tenant_id"], sha256).unlink()
            await repo.forget_gone_blob(tx, gone["tenant_id"], gone["id"])
        handled += 1
    return handled


async def forget_unattached(db: Database, settings: Settings, batch: int = 1000) -> int:
    """Deletes uploads no message took within THREADLINE_FILE_UNATTACHED_TTL_SECONDS (the retention job runs
    it): an upload is meant for a message, and one never sent must not hold the tenant's quota, or its bytes,
    for ever. Returns how many went."""
    before = datetime.now(UTC) - timedelta(seconds=settings.file_unattached_ttl_seconds)
    total = 0
    while (deleted := await repo.delete_unattached_before(db, before, batch)) > 0:
        total += deleted
    return total


PURGE_INTERVAL_SECONDS = 5.0
FORGET_EVERY_ROUNDS = 12  # a minute


async def purge_forever(db: Database, settings: Settings) -> None:
    """Each process's clean-up: stored bytes whose blobs are gone (messages deleted, users erased) leave the
    directory or bucket within seconds (processes storing files outside PostgreSQL; every such process must
    see the same store), and uploads never attached go after THREADLINE_FILE_UNATTACHED_TTL_SECONDS."""
    rounds = 0
    # Once a minute, or every round for a short time to live (tests, small deployments).
    forget_every = max(
        1, min(FORGET_EVERY_ROUNDS, int(settings.file_unattached_ttl_seconds / PURGE_INTERVAL_SECONDS))
    )
    while True:
        try:
            if settings.file_storage != "postgres":
                await purge_gone(db, settings)
            if settings.file_unattached_ttl_seconds > 0 and rounds % forget_every == 0:
                await forget_unattached(db, settings)
        except Exception:  # noqa: BLE001 - an outage or a full disk: the work waits for the next round
            log.warning("file clean-up failed; retrying", exc_info=True)
        rounds += 1
        await asyncio.sleep(PURGE_INTERVAL_SECONDS)
