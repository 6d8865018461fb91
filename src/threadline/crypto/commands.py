"""`threadline keys generate | status | rotate | seal | shred`: encryption at rest from the command line (crypto/)."""

from __future__ import annotations

import argparse
import json
import sys
import uuid
from typing import Any

from threadline.settings import Settings


def add_commands(sub: Any) -> None:
    keys = sub.add_parser("keys", help="encryption at rest: master and data keys")
    actions = keys.add_subparsers(dest="keys_command", required=True)
    generate = actions.add_parser("generate", help="print a new master key (base64 of 32 random bytes)")
    generate.set_defaults(run=_generate)
    status = actions.add_parser("status", help="data keys by master key and state, and the rotation; JSON")
    status.set_defaults(run=_status)
    rotate = actions.add_parser(
        "rotate",
        help="re-wrap every data key under THREADLINE_MASTER_KEY (earlier keys in THREADLINE_MASTER_KEYS_PREVIOUS)",
        description="Online and resumable: short transactions in keyset batches, progress in key_rotation (and a "
        "JSON line a second on stderr). --reencrypt also gives every owner a new data key and seals every sealed "
        "value again under it: text columns, content parts, attachment entries, the event log, file chunks, file "
        "bytes in the directory and S3 stores, cold documents. Then `keys shred --retired` may erase the old keys.",
    )
    rotate.add_argument(
        "--reencrypt", action="store_true", help="also re-encrypt content under new data keys"
    )
    rotate.add_argument("--batch", type=int, default=500, help="keys or rows per transaction (default 500)")
    rotate.add_argument(
        "--max-batches", type=int, help="stop after this many batches (resume by running again)"
    )
    rotate.set_defaults(run=_rotate)
    seal = actions.add_parser(
        "seal",
        help="seal the content stored plain (written before encryption was on, or imported): resumable batches",
    )
    seal.add_argument("--batch", type=int, default=500, help="rows per transaction (default 500)")
    seal.add_argument(
        "--max-batches", type=int, help="stop after this many batches (resume by running again)"
    )
    seal.set_defaults(run=_seal)
    shred = actions.add_parser(
        "shred",
        help="erase the data keys of a tenant or a user: their content becomes unreadable, in backups too once "
        "the master keys that wrapped those backups' key rows are destroyed",
    )
    shred.add_argument("--tenant", help="the tenant (ten_... or uuid); alone: every key of the tenant")
    shred.add_argument("--user", help="the user (usr_... or uuid): only their keys")
    shred.add_argument(
        "--retired",
        action="store_true",
        help="every data key a finished `keys rotate --reencrypt` retired (no value needs them any more)",
    )
    shred.set_defaults(run=_shred)


def _id(value: str, kind: str) -> uuid.UUID:
    from threadline.ids import Kind, id_or_uuid

    return id_or_uuid(value, Kind[kind])


def _with_db(settings: Settings, body: Any) -> Any:
    from threadline.db.standalone import with_pool

    return with_pool(settings, body)


def _generate(args: argparse.Namespace, settings: Settings) -> int:
    from threadline.crypto.master import generate_secret

    print(generate_secret())
    return 0


def _status(args: argparse.Namespace, settings: Settings) -> int:
    from threadline.crypto import repository as repo

    async def body(db: Any) -> dict[str, Any]:
        state = await repo.rotation(db)
        return {
            "keys": [dict(r) for r in await repo.key_counts(db)],
            "rotation": None
            if state is None
            else {k: str(v) if v is not None else None for k, v in state.items()},
        }

    print(json.dumps(_with_db(settings, body), default=str))
    return 0


def _rotate(args: argparse.Namespace, settings: Settings) -> int:
    from threadline import crypto
    from threadline.crypto.rotation import rotate

    keyring = crypto.active()
    if keyring is None:
        print(
            "threadline: keys rotate needs THREADLINE_MASTER_KEY (or _FILE): the key to rotate to",
            file=sys.stderr,
        )
        return 2
    if args.batch < 1 or (args.max_batches is not None and args.max_batches < 1):
        print("threadline: --batch and --max-batches must be at least 1", file=sys.stderr)
        return 2

    async def body(db: Any) -> dict[str, Any]:
        return await rotate(
            db,
            keyring,
            reencrypt=args.reencrypt,
            batch=args.batch,
            max_batches=args.max_batches,
            settings=settings,
            progress=_progress,
        )

    return _run_resumable("keys rotate", settings, body)


def _seal(args: argparse.Namespace, settings: Settings) -> int:
    from threadline import crypto
    from threadline.crypto.rotation import seal_plain

    keyring = crypto.active()
    if keyring is None or not keyring.seal_new:
        print(
            "threadline: keys seal needs THREADLINE_MASTER_KEY (or _FILE) and encryption on", file=sys.stderr
        )
        return 2
    if args.batch < 1 or (args.max_batches is not None and args.max_batches < 1):
        print("threadline: --batch and --max-batches must be at least 1", file=sys.stderr)
        return 2

    async def body(db: Any) -> dict[str, Any]:
        return await seal_plain(
            db, keyring, batch=args.batch, max_batches=args.max_batches, settings=settings, progress=_progress
        )

    return _run_resumable("keys seal", settings, body)


def _shred(args: argparse.Namespace, settings: Settings) -> int:
    from threadline import crypto
    from threadline.crypto import repository as repo
    from threadline.crypto.rotation import shred
    from threadline.errors import ThreadlineError

    if args.retired:
        if args.tenant or args.user:
            print("threadline: keys shred --retired takes no --tenant or --user", file=sys.stderr)
            return 2
        return _shred_retired(settings)
    if not args.tenant and not args.user:
        print("threadline: keys shred needs --tenant, --user, both, or --retired", file=sys.stderr)
        return 2
    try:
        tenant = _id(args.tenant, "TENANT") if args.tenant else None
        user = _id(args.user, "USER") if args.user else None
    except ThreadlineError as exc:
        print(f"threadline: {exc}", file=sys.stderr)
        return 2

    async def body(db: Any) -> dict[str, Any]:
        tenants = [tenant] if tenant is not None else await repo.tenants_of_user_keys(db, user)  # type: ignore[arg-type]
        erased = 0
        for t in tenants:
            erased += await shred(crypto.active(), db, t, user)
        return {"keysShredded": erased}

    print(json.dumps(_with_db(settings, body)))
    return 0


def _shred_retired(settings: Settings) -> int:
    from threadline import crypto
    from threadline.crypto.rotation import shred_retired

    async def body(db: Any) -> dict[str, Any]:
        try:
            return {"keysShredded": await shred_retired(crypto.active(), db)}
        except ValueError as exc:
            return {"error": str(exc)}

    result = _with_db(settings, body)
    if "error" in result:
        print(f"threadline: keys shred --retired: {result['error']}", file=sys.stderr)
        return 2
    print(json.dumps(result))
    return 0


def _progress(report: dict[str, Any]) -> None:
    print(json.dumps(report, default=str), file=sys.stderr, flush=True)


def _run_resumable(name: str, settings: Settings, body: Any) -> int:
    """A rotation or a sealing run: its report on stdout; a place it cannot reach (a file store not configured
    here, a master key missing) stops it with the reason, exit 1, its position kept for the next run."""
    from threadline.files.s3 import S3Error

    try:
        report = _with_db(settings, body)
    except (RuntimeError, S3Error) as exc:
        print(f"threadline: {name} stopped (run it again to resume): {exc}", file=sys.stderr)
        return 1
    print(json.dumps(report))
    return 0
