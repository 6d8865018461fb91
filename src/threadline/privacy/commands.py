"""`threadline pii backfill`: apply the tenants' PII policies to what was written before them."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import uuid
from typing import Any

from threadline.settings import Settings


def add_commands(sub: Any) -> None:
    pii = sub.add_parser("pii", help="PII detection and masking")
    actions = pii.add_subparsers(dest="pii_command", required=True)
    backfill = actions.add_parser(
        "backfill",
        help="scan the messages written before the tenant's PII policy; prints a JSON report",
        description="For every tenant whose PII policy is not OFF (or only --tenant), scan the messages never "
        "scanned: store their detections (DETECT, MASK_ON_READ), or mask them in place with their earlier "
        "versions, chunks and logged events (MASK_ON_WRITE). One transaction per batch; safe to stop and run "
        "again, and alongside the server.",
    )
    backfill.add_argument("--tenant", help="only this tenant (ten_... or a UUID)")
    backfill.add_argument("--batch", type=int, default=500, help="messages per transaction (default 500)")
    backfill.set_defaults(run=_backfill)


def _backfill(args: argparse.Namespace, settings: Settings) -> int:
    from threadline.crypto.startup import require_keys
    from threadline.db import Database
    from threadline.db.database import CLI
    from threadline.db.migrate import apply_migrations
    from threadline.db.standalone import with_database
    from threadline.ids import Kind, decode_id
    from threadline.privacy.backfill import backfill

    tenant: uuid.UUID | None = None
    if args.tenant:
        try:
            tenant = uuid.UUID(args.tenant)
        except ValueError:
            try:
                tenant = decode_id(args.tenant, Kind.TENANT)
            except Exception:  # noqa: BLE001 - any malformed id is the same usage error
                print(f"threadline: malformed tenant id {args.tenant[:80]!r}", file=sys.stderr)
                return 2
    if not 1 <= args.batch <= 10_000:
        print("threadline: --batch must be between 1 and 10000", file=sys.stderr)
        return 2

    async def work(dsn: str) -> dict[str, Any]:
        await apply_migrations(dsn)
        db = await Database.connect(dsn, 1, 2, application_name=CLI)
        try:
            await require_keys(db)  # masked text would otherwise be written plain beside sealed rows
            return dataclasses.asdict(await backfill(db, tenant, args.batch))
        finally:
            await db.close()

    print(json.dumps(with_database(settings, work)))
    return 0
