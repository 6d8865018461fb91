"""Files in export archives: the Threadline export's zip (`conversations.json` and `files/<sha256>`), and the
files ChatGPT and Claude export zips carry beside their conversations.

Export: each message's files are listed in its `attachments` as `{"type": "stored_file", "fileId", "name",
"contentType", "size", "sha256", "path"}`; the zip holds each distinct file once, at `path`.

Import: after the conversations are in, every attachment entry the import kept is matched with the archive
(a Threadline `path`; a ChatGPT `file-service://file-…` pointer by the member named after its file id; a file
name for Claude), its bytes stored as a file of the importing user (deduplicated as any upload), held by its
message, and the message's parts pointed at the new file id. Members are read as untrusted: bounded by their
declared size, THREADLINE_FILE_MAX_BYTES and the import's compression-ratio limit; what does not fit is
reported and skipped, the conversation stays.
"""

from __future__ import annotations

import bisect
import hashlib
import posixpath
import tempfile
import uuid
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from threadline.auth.principal import Principal
from threadline.db import Database, Executor
from threadline.files import repository as repo
from threadline.files import service
from threadline.files.sniff import SNIFF_BYTES, sniff
from threadline.ids import Kind, encode_id, parse_id
from threadline.porting.archive import CORRUPT, unreadable
from threadline.settings import Settings
from threadline.threads import repository as messages

STORED = "stored_file"
FILES_DIR = "files/"
_POINTER_PREFIXES = ("file-service://", "sediment://")


def zip_path(sha256_hex: str) -> str:
    return FILES_DIR + sha256_hex


async def export_entries(
    db: Executor, tenant_id: uuid.UUID, message_ids: list[uuid.UUID]
) -> dict[uuid.UUID, list[dict[str, Any]]]:
    """Each message's files as export attachment entries."""
    out: dict[uuid.UUID, list[dict[str, Any]]] = {}
    for row in await repo.message_files(db, tenant_id, message_ids):
        digest = bytes(row["sha256"]).hex()
        out.setdefault(row["message_id"], []).append(
            {
                "type": STORED,
                "fileId": encode_id(Kind.FILE, row["id"]),
                "name": row["filename"],
                "contentType": row["content_type"],
                "size": row["size"],
                "sha256": digest,
                "path": zip_path(digest),
            }
        )
    return out


async def write_zip(
    db: Database, settings: Settings, tenant_id: uuid.UUID, documents: list[dict[str, Any]], target: Path
) -> int:
    """A Threadline export zip of `documents` with their files; returns how many files it holds.

    The files are those the documents' messages hold (not deleted), looked up again: never what an attachment entry
    names, since an imported conversation's entries are the import file's words (a `stored_file` entry naming any
    file id of the tenant put that file's bytes in the zip, at the entry's `path`)."""
    message_ids = []
    for document in documents:
        for message in document.get("messages", []):
            parsed = parse_id(str(message.get("id") or ""))
            if parsed is not None and parsed[0] is Kind.MESSAGE and message.get("deleted_at") is None:
                message_ids.append(parsed[1])
    wanted: dict[str, Any] = {}
    for row in await repo.message_files(db, tenant_id, message_ids):
        wanted.setdefault(zip_path(bytes(row["sha256"]).hex()), row)
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("conversations.json", orjson.dumps(documents))
        for path, row in wanted.items():
            with archive.open(path, "w", force_zip64=True) as out:
                async for block in service.read_bytes(db, settings, row):
                    out.write(block)
    return len(wanted)


@dataclass
class ArchiveFiles:
    """The members of one archive that may be attachments (everything but the conversation files)."""

    path: Path
    archive: zipfile.ZipFile
    by_name: dict[str, zipfile.ZipInfo] = field(default_factory=dict)
    by_base: dict[str, zipfile.ZipInfo] = field(default_factory=dict)
    # Bytes the archive's files expand to as read so far (its conversation files' sizes first): the members read
    # as attachments count against THREADLINE_IMPORT_ZIP_MAX_TOTAL_BYTES too.
    expanded: int = 0
    _sorted: list[str] | None = None  # the members' base names, sorted (`find`)

    @classmethod
    def open(cls, path: Path) -> ArchiveFiles:
        archive = zipfile.ZipFile(path)
        found = cls(path, archive)
        for info in archive.infolist():
            if info.is_dir() or posixpath.basename(info.filename).startswith("conversations"):
                found.expanded += info.file_size
                continue
            found.by_name[info.filename] = info
            found.by_base.setdefault(posixpath.basename(info.filename), info)
        return found

    def find(self, entry: dict[str, Any]) -> zipfile.ZipInfo | None:
        """The member an attachment entry names, if the archive carries it."""
        path = entry.get("path")
        if entry.get("type") == STORED and isinstance(path, str):
            return self.by_name.get(path)
        pointer = entry.get("pointer")
        if isinstance(pointer, str) and pointer.startswith(_POINTER_PREFIXES):
            file_id = pointer.split("://", 1)[1]
            found = self.by_base.get(file_id)
            if found is not None or not file_id:
                return found
            # ChatGPT names them file-<id>-<name> or file-<id>.<ext>: found by bisection in the sorted names (a look
            # through every member for every pointer cost members x attachments: 10,000 x 1,000,000).
            if self._sorted is None:
                self._sorted = sorted(self.by_base)
            for prefix in (file_id + "-", file_id + "."):
                at = bisect.bisect_left(self._sorted, prefix)
                if at < len(self._sorted) and self._sorted[at].startswith(prefix):
                    return self.by_base[self._sorted[at]]
            return None
        name = entry.get("filename") or entry.get("name")
        if isinstance(name, str) and name:
            return self.by_base.get(posixpath.basename(name))
        return None


@dataclass
class Attached:
    files: int = 0
    skipped: list[str] = field(default_factory=list)


def _read_member(files: ArchiveFiles, info: zipfile.ZipInfo, settings: Settings) -> service.Upload | str:
    """The member as an upload, or why it was skipped."""
    limit = min(info.file_size, settings.file_max_bytes)
    if info.file_size > settings.file_max_bytes:
        return f"{info.filename}: {info.file_size} bytes, over THREADLINE_FILE_MAX_BYTES"
    if info.file_size > settings.import_zip_max_ratio * max(info.compress_size, 1):
        return f"{info.filename}: compressed past THREADLINE_IMPORT_ZIP_MAX_RATIO"
    if files.expanded + info.file_size > settings.import_zip_max_total_bytes:
        return f"{info.filename}: the archive's files expand past THREADLINE_IMPORT_ZIP_MAX_TOTAL_BYTES"
    files.expanded += info.file_size
    why = unreadable(info)
    if why is not None:
        return f"{info.filename}: cannot be read: {why}"
    spool: Any = tempfile.SpooledTemporaryFile(max_size=service.CHUNK_BYTES)
    hasher = hashlib.sha256()
    head = b""
    size = 0
    try:
        with files.archive.open(info) as source:
            while block := source.read(service.CHUNK_BYTES):
                size += len(block)
                if size > limit:  # a header that lied about the size
                    spool.close()
                    return f"{info.filename}: expands past its declared size"
                if len(head) < SNIFF_BYTES:
                    head += block[: SNIFF_BYTES - len(head)]
                hasher.update(block)
                spool.write(block)
    except (
        zipfile.BadZipFile,
        *CORRUPT,
    ) as exc:  # corrupt data, a wrong CRC: before, a traceback after the import
        spool.close()
        return f"{info.filename}: cannot be read: {exc}"
    name = service.clean_filename(posixpath.basename(info.filename))
    return service.Upload(name, size, hasher.digest(), sniff(head), spool)


def _repoint(parts: list[dict[str, Any]], entry: dict[str, Any], new_id: str) -> bool:
    """Points the parts that meant this attachment at the stored file; True if any changed."""
    changed = False
    for part in parts:
        kind = part.get("type")
        if entry.get("type") == STORED:
            match = part.get("file_id") == entry.get("fileId")
        elif kind == "image":
            match = part.get("url") == entry.get("pointer") and bool(entry.get("pointer"))
        else:
            match = kind == "file" and not part.get("file_id") and part.get("name") == entry.get("filename")
        if match and kind in ("image", "file"):
            part["file_id"] = new_id
            part.pop("url", None)
            changed = True
    return changed


async def attach_from_archives(
    db: Database,
    settings: Settings,
    principal: Principal,
    conversation_ids: Iterable[uuid.UUID],
    archives: list[ArchiveFiles],
) -> Attached:
    """Stores and attaches the files the archives carry for the imported conversations' attachment entries."""
    done = Attached()
    rows = await repo.imported_attachments(db, principal.tenant_id, list(conversation_ids))
    stored: dict[tuple[str, str], str] = {}  # (archive, member) -> new file id
    # Members that could not be stored: not read again for the next message naming them (each read of a member
    # referenced by thousands of messages, then refused by the quota, expanded it again).
    refused: set[tuple[str, str]] = set()
    for row in rows:
        entry = dict(row["data"]) if isinstance(row["data"], dict) else {}
        for files in archives:
            info = files.find(entry)
            if info is not None:
                break
        else:
            continue
        key = (str(files.path), info.filename)
        new_id = stored.get(key)
        if key in refused:
            continue
        if new_id is None:
            upload = _read_member(files, info, settings)
            if isinstance(upload, str):
                done.skipped.append(upload)
                refused.add(key)
                continue
            try:
                file_row, _ = await service.store(db, settings, principal, upload)
            except service.TooLarge as exc:
                done.skipped.append(f"{info.filename}: {exc.message}")
                refused.add(key)
                continue
            new_id = encode_id(Kind.FILE, file_row["id"])
            stored[key] = new_id
            done.files += 1
        parsed = parse_id(new_id)
        assert parsed is not None
        async with db.transaction() as tx:
            await repo.attach(tx, principal.tenant_id, row["message_id"], [parsed[1]])
            current = await messages.parts_of(tx, principal.tenant_id, [row["message_id"]])
            if current:
                parts = [dict(p) for p in current[0]["parts"]]
                if _repoint(parts, entry, new_id):
                    await messages.set_parts(tx, principal.tenant_id, row["message_id"], parts)
            if entry.get("type") == STORED:
                # The message holds the file now; a later export lists it from there (not twice).
                await repo.delete_attachment(tx, principal.tenant_id, row["id"])
            else:
                await repo.set_attachment_data(
                    tx, principal.tenant_id, row["id"], {**entry, "fileId": new_id}
                )
    return done
