"""`threadline tiers run | report | restore`: the cold tier from the command line (issue 20 item 4)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import uuid
from typing import Any

from threadline.settings import Settings


def add_commands(sub: Any) -> None:
    tiers = sub.add_parser("tiers", help="storage tiers: move idle conversations into cold documents, report")
    actions = tiers.add_subparsers(dest="tiers_command", required=True)
    run = actions.add_parser(
        "run",
        help="one pass (or one every --every seconds): conversations past their tenant's coldAfterDays go cold",
        description="Moves conversations archived, or without activity, for longer than their tenant's "
        "coldAfterDays (tierPolicySet) into one compressed document each. Bounded batches claimed with SKIP "
        "LOCKED: any number of passes may run at once, and a pass stopped half way resumes on the next run. "
        "Prints a JSON report.",
    )
    run.add_argument("--tenant", help="only this tenant (its public id ten_... or uuid)")
    run.add_argument(
        "--older-than-days",
        type=float,
        help="override the tenants' policies for this pass (with --tenant, also for a tenant without one)",
    )
    run.add_argument("--batch", type=int, default=20, help="conversations per transaction (default 20)")
    run.add_argument("--limit", type=int, help="stop after this many conversations went cold")
    run.add_argument("--every", type=float, help="keep running, one pass every this many seconds")
    run.set_defaults(run=_run)
    report = actions.add_parser("report", help="what is cold and the storage it saves; prints JSON")
    report.add_argument("--tenant", help="only this tenant (its public id ten_... or uuid)")
    report.set_defaults(run=_report)
    restore = actions.add_parser("restore", help="bring one cold conversation back now; prints JSON")
    restore.add_argument("conversation", help="the conversation (its public id cnv_... or uuid)")
    restore.set_defaults(run=_restore)


def _id(value: str | None, kind: str) -> uuid.UUID | None:
    from threadline.ids import Kind, id_or_uuid

    return None if value is None else id_or_uuid(value, Kind[kind])


def _with_db(settings: Settings, body: Any) -> Any:
    from threadline.crypto.startup import require_keys
    from threadline.db.standalone import with_pool

    async def checked(db: Any) -> Any:
        await require_keys(db)  # cold documents are made of, and restored to, content it must open and seal
        return await body(db)

    return with_pool(settings, checked)


def _run(args: argparse.Namespace, settings: Settings) -> int:
    from threadline.tiers.job import run_pass

    if args.batch < 1 or (args.limit is not None and args.limit < 1):
        print("threadline: --batch and --limit must be at least 1", file=sys.stderr)
        return 2
    if args.older_than_days is not None and args.older_than_days < 0:
        print("threadline: --older-than-days must not be negative", file=sys.stderr)
        return 2
    tenant = _id(args.tenant, "TENANT")

    async def once(db: Any) -> dict[str, Any]:
        done = await run_pass(
            db, tenant_id=tenant, older_than_days=args.older_than_days, batch=args.batch, limit=args.limit
        )
        return {
            "frozen": len(done.frozen),
            "keptHot": done.kept_hot,
            "failed": done.failed,
            "hotBytes": done.hot_bytes,
            "coldBytes": done.cold_bytes,
            "deepened": done.deepened,
        }

    async def body(db: Any) -> int:
        while True:
            print(json.dumps(await once(db)), flush=True)
            if args.every is None:
                return 0
            await asyncio.sleep(args.every)

    return int(_with_db(settings, body))


def _report(args: argparse.Namespace, settings: Settings) -> int:
    from threadline.tiers.service import storage

    tenant = _id(args.tenant, "TENANT")

    async def body(db: Any) -> dict[str, Any]:
        return (await storage(db, tenant)).as_json()

    print(json.dumps(_with_db(settings, body)))
    return 0


def _restore(args: argparse.Namespace, settings: Settings) -> int:
    from threadline.tiers.service import restore_anywhere

    conversation = _id(args.conversation, "CONVERSATION")
    assert conversation is not None

    async def body(db: Any) -> bool:
        return await restore_anywhere(db, conversation)

    restored = bool(_with_db(settings, body))
    print(json.dumps({"restored": restored}))
    return 0
