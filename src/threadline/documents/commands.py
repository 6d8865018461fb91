"""`threadline documents register MANIFEST.json`: trusted documents from a client's manifest."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from graphql import GraphQLSyntaxError, parse

from threadline.documents.manifest import ManifestError, read_manifest
from threadline.settings import Settings


def add_commands(sub: Any) -> None:
    documents = sub.add_parser("documents", help="persisted (trusted) GraphQL documents")
    actions = documents.add_subparsers(dest="documents_command", required=True)
    register = actions.add_parser(
        "register",
        help="register a client's operations (idempotent); prints a JSON report",
        description="Register the operations of an Apollo persisted-query manifest or of a plain {id: text} "
        "map (GraphQL Code Generator, Relay) as trusted documents: clients may name them by id (`documentId`, "
        "or extensions.persistedQuery.sha256Hash), and with THREADLINE_TRUSTED_DOCUMENTS=true they are the "
        "only operations the server runs. Registering again adds nothing; an id already registered with "
        "another text is a conflict and left as it was. Exit status 1 on any conflict or unparsable document.",
    )
    register.add_argument("manifest", type=Path, metavar="MANIFEST.json", help="the client's manifest")
    register.set_defaults(run=_register)


def _register(args: argparse.Namespace, settings: Settings) -> int:
    from threadline.db import Database
    from threadline.db.database import CLI
    from threadline.db.migrate import apply_migrations
    from threadline.db.standalone import with_database
    from threadline.documents import repository
    from threadline.graphql.persisted import DOCUMENT_ID_MAX_CHARS, sha256_hex

    try:
        entries = read_manifest(args.manifest)
    except ManifestError as exc:
        print(f"threadline: {exc}", file=sys.stderr)
        return 2
    report: dict[str, Any] = {"added": [], "pinned": [], "unchanged": [], "conflicts": [], "invalid": []}
    valid = []
    for entry in entries:
        if not 0 < len(entry.id) <= DOCUMENT_ID_MAX_CHARS:
            report["invalid"].append(
                {"id": entry.id[:DOCUMENT_ID_MAX_CHARS], "error": "id longer than 200 characters or empty"}
            )
            continue
        try:
            parse(entry.body)
        except GraphQLSyntaxError as exc:
            report["invalid"].append({"id": entry.id, "error": exc.message})
            continue
        valid.append(entry)

    async def work(dsn: str) -> None:
        await apply_migrations(dsn)
        db = await Database.connect(dsn, 1, 2, application_name=CLI)
        try:
            for entry in valid:
                outcome = await repository.register_pinned(db, entry.id, sha256_hex(entry.body), entry.body)
                report["conflicts" if outcome == "conflict" else outcome].append(entry.id)
        finally:
            await db.close()

    with_database(settings, work)
    print(json.dumps(report))
    summary = ", ".join(f"{len(v)} {k}" for k, v in report.items())
    print(f"threadline: {len(entries)} operations in {args.manifest}: {summary}", file=sys.stderr)
    return 1 if report["conflicts"] or report["invalid"] else 0
