"""`threadline import` and `threadline export`: files in and out, straight against the database.

Import streams its files (a 1 GB export never needs 1 GB of memory), shows a progress bar on stderr
and prints a JSON report on stdout; the exit status is 1 when anything was refused. Export writes a
Threadline document (`--conversation`) or a user's data-access export (`--user`).
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import time
import uuid
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import orjson

from threadline.db.standalone import with_database
from threadline.porting.archive import EXPORT_FILE, ArchiveRefused, archive_files
from threadline.porting.detect import UnknownFormat, detect_stream
from threadline.porting.model import ImportFormat
from threadline.settings import Settings


def add_commands(sub: Any) -> None:
    imp = sub.add_parser(
        "import",
        help="import conversations from export files (streamed; progress on stderr, JSON report on stdout)",
        description="Import ChatGPT, Claude, LibreChat, Open WebUI or Threadline exports. FILE may be conversations.json, the split "
        "conversations-000.json, conversations-001.json, ... files, a directory holding them, or the export's "
        ".zip. New conversations import in batches, each in one transaction (a batch the database refuses is tried "
        "again one conversation at a time); re-importing creates no duplicates and merges what is new. Exit "
        "status 1 when any conversation was refused (the report lists them with their position in the file).",
    )
    imp.add_argument("files", nargs="+", metavar="FILE", help="export file(s), directory or .zip")
    imp.add_argument(
        "--format",
        choices=[f.value for f in ImportFormat],
        help="the files' format (default: detected from the start of each file, which must agree)",
    )
    imp.add_argument(
        "--api-key",
        default=os.environ.get("THREADLINE_API_KEY"),
        help="import as this key's user, who owns the new conversations (default THREADLINE_API_KEY)",
    )
    imp.add_argument(
        "--conversation",
        help="add the threads of the one imported conversation to this conversation (its owner or an admin only)",
    )
    imp.add_argument("--quiet", action="store_true", help="no progress bar")
    imp.set_defaults(run=_import)

    exp = sub.add_parser(
        "export",
        help="export a conversation, or everything of a user, as Threadline JSON",
        description="Write a conversation in the Threadline export format, or (--user) everything a user owns or "
        "wrote, for a data-access request. With --api-key the key's access rules apply; without it the operator "
        "(who has the database) may export anything. Audited either way.",
    )
    what = exp.add_mutually_exclusive_group(required=True)
    what.add_argument("--conversation", help="conversation id (cnv_...)")
    what.add_argument("--user", help="user id (usr_...)")
    exp.add_argument(
        "--out",
        required=True,
        help="file to write, or - for stdout; a .zip holds the conversation with its files (files/<sha256>)",
    )
    exp.add_argument(
        "--format",
        choices=["threadline", "markdown"],
        default="threadline",
        help="threadline (JSON, default) or markdown (a conversation for people to read; --conversation only)",
    )
    exp.add_argument(
        "--all-branches",
        action="store_true",
        help="markdown: every branch of every thread (default: the current branch of each)",
    )
    exp.add_argument("--api-key", default=os.environ.get("THREADLINE_API_KEY"), help="act as this key's user")
    exp.set_defaults(run=_export)


def export_files(paths: list[str], settings: Settings) -> Iterator[tuple[str, int, Any]]:
    """(name, size, opener) of every export file named by `paths` (files, directories, .zip archives).

    An archive is checked against the expansion limits (`archive.archive_files`) as it is listed, so a
    zip bomb is refused before anything is imported."""
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            # Files only: a directory named like an export file is not one (it was an IsADirectoryError traceback).
            found = sorted(p for p in path.iterdir() if EXPORT_FILE.search(p.name) and p.is_file())
            if not found:
                raise FileNotFoundError(f"{path}: no conversations.json or conversations-NNN.json in it")
            for p in found:
                yield str(p), p.stat().st_size, p.open
        elif path.suffix.lower() == ".zip":
            yield from archive_files(path, settings)
        else:
            yield str(path), path.stat().st_size, path.open


class Progress:
    """A one-line progress bar on stderr, redrawn at most ten times a second."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.total = max(total, 1)
        self.enabled = enabled
        self.done_bytes = 0
        self.start = time.monotonic()
        self._last = 0.0
        self.conversations = 0
        self.messages = 0

    def update(
        self, read: int | None = None, *, conversations: int | None = None, messages: int | None = None
    ) -> None:
        if read is not None:
            self.done_bytes = read
        if conversations is not None:
            self.conversations, self.messages = conversations, messages or 0
        now = time.monotonic()
        if self.enabled and now - self._last >= 0.1:
            self._last = now
            self._draw(now)

    def _draw(self, now: float) -> None:
        share = min(self.done_bytes / self.total, 1.0)
        bar = "#" * int(share * 30)
        rate = self.messages / max(now - self.start, 1e-6)
        sys.stderr.write(
            f"\rimport {share:4.0%} [{bar:<30}] {self.done_bytes / 1e6:,.1f}/{self.total / 1e6:,.1f} MB  "
            f"{self.conversations:,} conversations  {self.messages:,} messages  {rate:,.0f} msg/s "
        )
        sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            self._draw(time.monotonic())
            sys.stderr.write("\n")


@contextmanager
def _output(target: str) -> Iterator[IO[bytes]]:
    if target == "-":
        yield sys.stdout.buffer
        sys.stdout.buffer.flush()
        return
    # Written beside the target and renamed at the end: a failed export leaves no half-written file.
    partial = Path(f"{target}.partial")
    try:
        with open(partial, "wb") as f:
            yield f
        partial.replace(target)
    finally:
        partial.unlink(missing_ok=True)


def _fail(message: str) -> int:
    print(f"threadline: {message}", file=sys.stderr)
    return 2


def _import(args: argparse.Namespace, settings: Settings) -> int:
    from threadline.crypto.startup import KeyConfigurationError
    from threadline.errors import ThreadlineError

    if not args.api_key:
        return _fail(
            "import needs --api-key (or THREADLINE_API_KEY): the key's user will own the conversations"
        )
    try:
        files = list(export_files(args.files, settings))
        if args.format is None:
            args.format = _detected_format(files).value
    except (OSError, zipfile.BadZipFile, ArchiveRefused, UnknownFormat) as exc:
        return _fail(str(exc))
    try:
        with _few_collections():
            report = with_database(settings, lambda dsn: _import_work(dsn, settings, args, files))
    except ThreadlineError as exc:
        return _fail(exc.message)
    except KeyConfigurationError as exc:
        return _fail(str(exc))
    print(orjson.dumps(report).decode())
    return 1 if report["failed"] else 0


@contextmanager
def _few_collections() -> Iterator[None]:
    """The cyclic garbage collector, tuned for an import: the modules' objects frozen out of its scans, and a
    collection every 50,000 allocations instead of every 700. An import allocates millions of containers (decoded
    JSON, plans, rows) that reference counting frees; with the defaults each of ~1,100 young collections and ~10
    full ones walked the live ones again: 0.9 s of a 3.2 s merge re-import of 500 conversations (0.13 s after)."""
    gc.collect()
    gc.freeze()
    threshold = gc.get_threshold()
    gc.set_threshold(50_000, 20, 100)
    try:
        yield
    finally:
        gc.set_threshold(*threshold)
        gc.unfreeze()


def _detected_format(files: list[tuple[str, int, Any]]) -> ImportFormat:
    """The format of the files, each recognised from its start (porting.detect): they must agree."""
    found: dict[ImportFormat, str] = {}
    for name, _, opener in files:
        with opener("rb") as stream:
            try:
                found.setdefault(detect_stream(stream), name)
            except UnknownFormat as exc:
                raise UnknownFormat(f"{name}: {exc} with --format") from None
    if len(found) > 1:
        listed = ", ".join(f"{name} is {fmt.value}" for fmt, name in found.items())
        raise UnknownFormat(f"the files are of different formats ({listed}): import them separately")
    (fmt,) = found
    return fmt


async def _import_work(
    dsn: str, settings: Settings, args: argparse.Namespace, files: list[Any]
) -> dict[str, Any]:
    from threadline import crypto
    from threadline.auth.service import authenticate
    from threadline.crypto.startup import check as check_keys
    from threadline.db import Database
    from threadline.db.database import IMPORT
    from threadline.db.migrate import apply_migrations
    from threadline.ids import Kind, decode_id
    from threadline.porting.jsonstream import JsonArrayReader, JsonStreamError
    from threadline.porting.service import Importer, ImportFailure

    await apply_migrations(dsn)
    # The pool's timeouts too: an import frozen mid-transaction (a stopped terminal, a lost network) is ended by
    # PostgreSQL after the idle timeout instead of holding its locks and the streams' floor for hours.
    db = await Database.connect(
        dsn,
        1,
        settings.import_concurrency + 1,
        application_name=IMPORT,
        statement_timeout_seconds=settings.db_statement_timeout_seconds,
        idle_in_transaction_timeout_seconds=settings.db_idle_in_transaction_timeout_seconds,
    )
    try:
        # As `serve`: no master key (or the wrong one) over sealed content, no import (it would store plaintext).
        await check_keys(db, crypto.active())
        principal = await authenticate(db, settings, f"Bearer {args.api_key}")
        target = decode_id(args.conversation, Kind.CONVERSATION) if args.conversation else None
        progress = Progress(sum(size for _, size, _ in files), enabled=not args.quiet)
        run = Importer(
            db,
            settings,
            principal,
            ImportFormat(args.format),
            target_conversation_id=target,
            concurrency=settings.import_concurrency,
            on_progress=lambda r: progress.update(conversations=len(r.imported), messages=r.messages),
            lazy=True,  # a re-import of a grown ChatGPT export reads only its new nodes
        )
        await run.check_access()
        done_before = 0
        for name, size, opener in files:
            with opener("rb") as stream:
                # A lazy run decodes an item only if its bytes were not imported before (Importer._undeferred).
                reader = JsonArrayReader(
                    stream, max_item_bytes=settings.import_item_max_bytes, defer=run.lazy
                )
                failures_before = len(run.report.failures)
                run.file = name
                try:
                    for item in reader:
                        await run.submit(run.prepare(item))
                        progress.update(done_before + reader.bytes_read)
                except JsonStreamError as exc:
                    run.report.failures.append(ImportFailure(-1, None, str(exc)))
                except (ArchiveRefused, zipfile.BadZipFile) as exc:
                    # Expansion past a limit, or past a header that lied about it (zipfile then finds the
                    # CRC wrong): what was read before stays imported, the rest of the file is refused.
                    run.report.failures.append(ImportFailure(-1, None, f"archive refused: {exc}"))
                for failure in run.report.failures[failures_before:]:
                    failure.file = failure.file or name
            done_before += size
        report = await run.finish()
        progress.update(done_before)
        progress.close()
        # Files the archives carry (a Threadline zip's files/, ChatGPT's file-… members): stored and attached.
        attached = await _attach_archive_files(db, settings, principal, args.files, report)
        return {"format": args.format, **report.as_dict(), **attached}
    finally:
        await db.close()


async def _attach_archive_files(
    db: Any, settings: Settings, principal: Any, paths: list[str], report: Any
) -> dict[str, Any]:
    from threadline.files import archives

    zips = [archives.ArchiveFiles.open(Path(p)) for p in paths if Path(p).suffix.lower() == ".zip"]
    if not zips:
        return {}
    try:
        done = await archives.attach_from_archives(db, settings, principal, report.conversation_ids, zips)
    finally:
        for found in zips:
            found.archive.close()
    return {"files": done.files, "filesSkipped": done.skipped}


def _export(args: argparse.Namespace, settings: Settings) -> int:
    from threadline.errors import ThreadlineError

    try:
        counts = with_database(settings, lambda dsn: _export_work(dsn, settings, args))
    except ThreadlineError as exc:
        return _fail(exc.message)
    print(orjson.dumps(counts).decode(), file=sys.stderr if args.out == "-" else sys.stdout)
    return 0


async def _export_work(dsn: str, settings: Settings, args: argparse.Namespace) -> dict[str, Any]:
    from threadline.audit.service import SystemActor
    from threadline.auth.service import authenticate
    from threadline.db import Database
    from threadline.db.database import EXPORT
    from threadline.db.migrate import apply_migrations
    from threadline.errors import bad_input, not_found
    from threadline.ids import Kind, decode_id
    from threadline.porting import exporter
    from threadline.porting import repository as repo

    await apply_migrations(dsn)
    db = await Database.connect(dsn, 1, 2, application_name=EXPORT)
    try:
        from threadline.crypto.startup import require_keys

        await require_keys(db)  # an export over keys it cannot open would write ciphertext as the text
        actor: Any
        kind, raw = (Kind.CONVERSATION, args.conversation) if args.conversation else (Kind.USER, args.user)
        target: uuid.UUID = decode_id(raw, kind)
        if args.api_key:
            actor = await authenticate(db, settings, f"Bearer {args.api_key}")
        else:
            lookup = repo.tenant_of_conversation if kind is Kind.CONVERSATION else repo.tenant_of_user
            tenant = await lookup(db, target)
            if tenant is None:
                raise not_found("Conversation" if kind is Kind.CONVERSATION else "User")
            actor = SystemActor(tenant)
        if args.format == "markdown":
            from threadline.porting import markdown

            if kind is not Kind.CONVERSATION:
                raise bad_input("--format markdown exports one conversation: give --conversation")
            done = await markdown.export_markdown(db, actor, target, all_branches=args.all_branches)
            with _output(args.out) as out:
                out.write(done.text.encode())
            return {"conversations": 1, "messages": done.messages, "format": "markdown", "out": args.out}
        if args.out.lower().endswith(".zip"):
            # A zip: the export (conversations.json) and the files its messages hold (files/<sha256>).
            from threadline.files import archives

            if kind is not Kind.CONVERSATION:
                raise bad_input("a .zip export holds one conversation: give --conversation")
            document = await exporter.export_conversation(db, actor, target)
            files = await archives.write_zip(db, settings, actor.tenant_id, [document], Path(args.out))
            counted = {"conversations": 1, "messages": len(document["messages"]), "files": files}
            return {**counted, "out": args.out}
        with _output(args.out) as out:
            if kind is Kind.CONVERSATION:
                document = await exporter.export_conversation(db, actor, target)
                out.write(orjson.dumps(document))
                return {"conversations": 1, "messages": len(document["messages"]), "out": args.out}
            counts = await exporter.export_user(db, actor, target, out.write)  # type: ignore[arg-type]
            return {**counts, "out": args.out}
    finally:
        await db.close()
