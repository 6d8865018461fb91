"""Export archives (.zip) for `threadline import`, read without trusting them (zip bombs).

A few hundred kilobytes of zip can expand to gigabytes. Before anything is imported, the archive's
entry count (from its end record, before the central directory is parsed) and each export file's
declared size, compression ratio and the declared total are checked against settings; while reading,
the bytes actually expanded are counted against the same limits, so a lying header cannot get past
them either. Each file is read as a stream (the JSON reader pulls ~1 MiB at a time), so memory stays
flat however large the expansion.
"""

from __future__ import annotations

import lzma
import re
import zipfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from threadline.settings import Settings

EXPORT_FILE = re.compile(r"(^|/)conversations(-\d+)?\.json$")


class ArchiveRefused(ValueError):
    """The archive, or one of its files, expands past a limit or cannot be read."""


# What zipfile can expand; anything else (AES, PPMd, ...) it refuses only once opened, with NotImplementedError.
_METHODS = frozenset({zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA})
# What a member's corrupt data raises while it is read (bz2's errors are OSError), besides zipfile's own BadZipFile
# for a wrong CRC (which the callers catch): before, a traceback in the middle of an import.
CORRUPT = (zlib.error, lzma.LZMAError, EOFError, OSError)


def unreadable(info: zipfile.ZipInfo) -> str | None:
    """Why a member cannot be read from its headers alone (zipfile would raise RuntimeError or
    NotImplementedError on opening it), or None."""
    if info.flag_bits & 0x1:
        return "it is encrypted (a password-protected archive)"
    if info.compress_type not in _METHODS:
        return f"its compression method ({info.compress_type}) is not supported"
    return None


def _declared_entries(path: Path) -> int | None:
    """Entries the archive's end record announces (zip64 too), or None if this Python cannot say."""
    end_record = getattr(zipfile, "_EndRecData", None)
    if end_record is None:
        return None
    with open(path, "rb") as f:
        record = end_record(f)
    return None if record is None else int(record[getattr(zipfile, "_ECD_ENTRIES_TOTAL", 4)])


class _Budget:
    """Bytes expanded so far across the archive's files."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0


class ExpansionGuard:
    """A member's stream that refuses to expand past its declared size, the per-file cap or the total."""

    def __init__(self, stream: IO[bytes], name: str, limit: int, setting: str, budget: _Budget) -> None:
        self._stream = stream
        self._name = name
        self._limit = limit
        self._setting = setting
        self._budget = budget
        self._read = 0

    def read(self, n: int = -1) -> bytes:
        # Never more than a bounded piece at a time, whatever the caller asks for.
        try:
            data = self._stream.read(min(n, 1 << 24) if n >= 0 else 1 << 24)
        except CORRUPT as exc:
            raise ArchiveRefused(f"{self._name} cannot be read: {exc}") from exc
        self._read += len(data)
        self._budget.used += len(data)
        if self._read > self._limit:
            raise ArchiveRefused(f"{self._name} expands past {self._limit} bytes ({self._setting})")
        if self._budget.used > self._budget.limit:
            raise ArchiveRefused(
                f"the archive's files expand past {self._budget.limit} bytes (THREADLINE_IMPORT_ZIP_MAX_TOTAL_BYTES)"
            )
        return data

    def close(self) -> None:
        self._stream.close()

    def __enter__(self) -> ExpansionGuard:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def archive_files(path: Path, settings: Settings) -> Iterator[tuple[str, int, Callable[[str], Any]]]:
    """(name, size, opener) of each export file in the archive; ArchiveRefused before any is read when the
    archive's headers already exceed a limit."""
    entries = _declared_entries(path)
    if entries is not None and entries > settings.import_zip_max_members:
        raise ArchiveRefused(
            f"{path}: {entries} entries; the limit is {settings.import_zip_max_members} "
            "(THREADLINE_IMPORT_ZIP_MAX_MEMBERS)"
        )
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile as exc:
        raise ArchiveRefused(f"{path}: {exc}") from exc
    infos = archive.infolist()
    if len(infos) > settings.import_zip_max_members:
        raise ArchiveRefused(
            f"{path}: {len(infos)} entries; the limit is {settings.import_zip_max_members} "
            "(THREADLINE_IMPORT_ZIP_MAX_MEMBERS)"
        )
    members = sorted((m for m in infos if EXPORT_FILE.search(m.filename)), key=lambda m: m.filename)
    if not members:
        raise FileNotFoundError(f"{path}: no conversations.json in the archive")
    total = 0
    for m in members:
        name = f"{path}:{m.filename}"
        why = unreadable(m)
        if why is not None:
            raise ArchiveRefused(f"{name} cannot be read: {why}")
        try:
            # Its local header, read now: one zipfile refuses on opening (a wrong signature, a name other than the
            # directory's) was refused only when the import reached it, with a traceback.
            archive.open(m).close()
        except (zipfile.BadZipFile, *CORRUPT) as exc:
            raise ArchiveRefused(f"{name} cannot be read: {exc}") from exc
        if m.file_size > settings.import_zip_max_member_bytes:
            raise ArchiveRefused(
                f"{name} expands to {m.file_size} bytes; the limit is {settings.import_zip_max_member_bytes} "
                "(THREADLINE_IMPORT_ZIP_MAX_MEMBER_BYTES)"
            )
        if m.file_size > settings.import_zip_max_ratio * max(m.compress_size, 1):
            raise ArchiveRefused(
                f"{name} expands {m.compress_size} bytes to {m.file_size} (ratio {m.file_size // max(m.compress_size, 1)}); "
                f"the limit is a ratio of {settings.import_zip_max_ratio} (THREADLINE_IMPORT_ZIP_MAX_RATIO)"
            )
        total += m.file_size
        if total > settings.import_zip_max_total_bytes:
            raise ArchiveRefused(
                f"{path}: its export files expand to more than {settings.import_zip_max_total_bytes} bytes "
                "(THREADLINE_IMPORT_ZIP_MAX_TOTAL_BYTES)"
            )
    budget = _Budget(settings.import_zip_max_total_bytes)
    for m in members:
        # The declared size bounds the stream too: a header that lies about it is refused, not believed.
        limit = min(m.file_size, settings.import_zip_max_member_bytes)
        setting = "its declared size" if limit == m.file_size else "THREADLINE_IMPORT_ZIP_MAX_MEMBER_BYTES"

        def opener(
            _mode: str, m: zipfile.ZipInfo = m, limit: int = limit, setting: str = setting
        ) -> ExpansionGuard:
            return ExpansionGuard(archive.open(m), f"{path}:{m.filename}", limit, setting, budget)

        yield f"{path}:{m.filename}", m.file_size, opener
