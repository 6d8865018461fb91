"""`threadline audit export` and `threadline audit purge`: the audit log for operators."""

from __future__ import annotations

import argparse
import json
import sys
import uuid
from datetime import datetime
from typing import Any

from threadline.settings import Settings


def add_commands(sub: Any) -> None:
    audit = sub.add_parser("audit", help="the audit log: export it, apply its retention")
    actions = audit.add_subparsers(dest="audit_command", required=True)
    export = actions.add_parser(
        "export",
        help="write a tenant's audit log as JSON lines, oldest first (the export itself is audited)",
        description="Write every entry of a tenant's audit log (or those since --since) as one JSON object per "
        "line: id, action, actorId, targetKind, targetId, details, createdAt, with public ids as the API gives "
        "them. The export is recorded in the log (audit.export).",
    )
    export.add_argument("--tenant", required=True, help="the tenant's id (ten_... or a UUID)")
    export.add_argument("--since", help="only entries at or after this ISO 8601 time")
    export.add_argument("--out", default="-", help="file to write, or - for stdout (default)")
    export.set_defaults(run=_export)
    purge = actions.add_parser(
        "purge",
        help="delete entries past each tenant's audit retention now (the server does it in the background); "
        "prints the count",
    )
    purge.set_defaults(run=_purge)


def _tenant(value: str) -> uuid.UUID:
    from threadline.ids import Kind, id_or_uuid

    return id_or_uuid(value, Kind.TENANT)


def _export(args: argparse.Namespace, settings: Settings) -> int:
    from threadline.audit import export
    from threadline.db.standalone import with_database
    from threadline.errors import ThreadlineError

    try:
        tenant = _tenant(args.tenant)
        since = datetime.fromisoformat(args.since) if args.since else None
    except (ThreadlineError, ValueError) as exc:
        print(f"threadline: {exc}", file=sys.stderr)
        return 2

    async def work(dsn: str) -> int:
        db = await _connect(dsn)
        try:
            out = sys.stdout if args.out == "-" else open(args.out, "w", encoding="utf-8")  # noqa: SIM115
            try:
                return await export.write_lines(db, tenant, since, lambda line: out.write(line + "\n"))
            finally:
                if out is not sys.stdout:
                    out.close()
        finally:
            await db.close()

    count = with_database(settings, work)
    print(f"threadline: {count} audit entries exported", file=sys.stderr)
    return 0


def _purge(args: argparse.Namespace, settings: Settings) -> int:
    from threadline.audit.retention import purge_expired
    from threadline.db.standalone import with_database

    async def work(dsn: str) -> int:
        db = await _connect(dsn)
        try:
            return await purge_expired(db)
        finally:
            await db.close()

    print(json.dumps({"deleted": with_database(settings, work)}))
    return 0


async def _connect(dsn: str) -> Any:
    from threadline.db import Database
    from threadline.db.database import CLI
    from threadline.db.migrate import apply_migrations

    await apply_migrations(dsn)
    return await Database.connect(dsn, 1, 2, application_name=CLI)
