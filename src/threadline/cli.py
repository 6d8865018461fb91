"""`threadline` command line: serve | migrate | export-schema | tenant-create | worker | ..."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import importlib
import json
import logging
import signal
import sys
from pathlib import Path

from threadline.db.standalone import GracefulTermination, with_database
from threadline.settings import Settings


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    with GracefulTermination():
        return _serve_until_stopped(args, settings)


def _serve_until_stopped(args: argparse.Namespace, settings: Settings) -> int:
    import uvicorn

    from threadline.app import create_app
    from threadline.db.embedded import EmbeddedPostgres, describe_dsn
    from threadline.serving import serve_workers, worker_count

    host = args.host or settings.host
    port = args.port or settings.port
    embedded = None if settings.database_url else EmbeddedPostgres(settings.data_dir)
    try:
        dsn = embedded.start() if embedded is not None else str(settings.database_url)
        # What someone starting the server needs to know, and nothing else unless asked (--verbose).
        if embedded is not None:
            print(f"threadline: data directory {settings.data_dir}", flush=True)
        where = f"embedded PostgreSQL in {embedded.pgdata}" if embedded else describe_dsn(dsn)
        print(f"threadline: database {where}", flush=True)
        workers = worker_count(args.workers, settings)
        if workers > 1:
            print(f"threadline: listening on http://{host}:{port}/graphql", flush=True)
            print(f"threadline: {workers} server processes (--workers, THREADLINE_WORKERS)", flush=True)
            verbose = bool(getattr(args, "verbose", False))
            serve_workers(settings, dsn, host, port, workers, verbose)
            return 0
        print(f"threadline: listening on http://{host}:{port}/graphql", flush=True)
        uvicorn.run(
            create_app(dataclasses.replace(settings, database_url=dsn)),
            host=host,
            port=port,
            log_level=None,  # observability/logs.py sets the levels (quiet start, --verbose)
            log_config=None,  # uvicorn's loggers propagate to ours (request ids, THREADLINE_LOG_JSON)
            ws_max_size=settings.ws_max_message_bytes,
            # SIGTERM: stop accepting, close WebSockets with 1012, let requests in flight finish this long.
            timeout_graceful_shutdown=max(1, round(settings.shutdown_grace_seconds)),
            # Event frames are small; compressing each one per socket costs more CPU than it saves.
            ws_per_message_deflate=False,
            # The app derives the client address (THREADLINE_TRUSTED_PROXIES, ratelimits.addresses); uvicorn's own
            # handling trusted X-Forwarded-For from 127.0.0.1 and ::1 (FORWARDED_ALLOW_IPS), from any local process.
            proxy_headers=False,
        )
    finally:
        if embedded is not None:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM must not cut the stop short
            embedded.stop()
            print("threadline: embedded PostgreSQL left (stopped if this was its last user)", flush=True)
    return 0


def _migrate(args: argparse.Namespace, settings: Settings) -> int:
    from threadline.db.migrate import apply_migrations

    print(with_database(settings, apply_migrations))
    return 0


def _export_schema(args: argparse.Namespace, settings: Settings) -> int:
    from threadline.schema import printed_schema

    text = printed_schema()
    if args.out == "-":
        sys.stdout.write(text)
    else:
        Path(args.out).write_text(text)
        print(f"wrote {args.out}", file=sys.stderr)
    return 0


def _tenant_create(args: argparse.Namespace, settings: Settings) -> int:
    from threadline.auth.service import create_tenant
    from threadline.db import Database
    from threadline.db.database import CLI
    from threadline.db.migrate import apply_migrations
    from threadline.ids import Kind, encode_id

    async def work(dsn: str) -> dict[str, str]:
        await apply_migrations(dsn)
        db = await Database.connect(dsn, 1, 2, application_name=CLI)
        try:
            created = await create_tenant(db, args.name, args.admin_email)
        finally:
            await db.close()
        return {
            "tenantId": encode_id(Kind.TENANT, created.tenant_id),
            "userId": encode_id(Kind.USER, created.user_id),
            "apiKey": created.api_key,
        }

    print(json.dumps(with_database(settings, work)))
    return 0


WORKER_JOBS = ("runs", "enrichment", "embeddings")


def _worker_jobs(value: str) -> frozenset[str]:
    """`--jobs`: a comma-separated choice of WORKER_JOBS (at least one)."""
    names = {name.strip().lower() for name in value.split(",") if name.strip()}
    unknown = sorted(names - set(WORKER_JOBS))
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"choose one or more of {', '.join(WORKER_JOBS)} (got {value!r})")
    return frozenset(names)


def _count(value: str) -> int:
    """A number of things at once: 0 or more."""
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {value!r}") from None
    if number < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more (got {number})")
    return number


def _seconds(value: str) -> float:
    """A duration in seconds, more than 0."""
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {value!r}") from None
    if not number > 0 or number == float("inf"):
        raise argparse.ArgumentTypeError(f"must be more than 0 seconds (got {value})")
    return number


def _worker(args: argparse.Namespace, settings: Settings) -> int:
    import os
    import signal

    from threadline import crypto
    from threadline.crypto.startup import KeyConfigurationError
    from threadline.crypto.startup import check as check_keys
    from threadline.db import Database
    from threadline.db.database import WORKER
    from threadline.db.migrate import apply_migrations
    from threadline.embeddings.service import Embeddings
    from threadline.embeddings.service import start as start_embeddings
    from threadline.enrich.worker import EnrichmentWorker
    from threadline.runs.worker import Worker
    from threadline.tiers.job import start_tiers, stop_tiers

    jobs: frozenset[str] = args.jobs if args.jobs is not None else frozenset(WORKER_JOBS)
    if args.queue:
        settings = dataclasses.replace(settings, run_queue=args.queue)
    concurrency = args.concurrency if args.concurrency is not None else max(settings.run_workers, 1)
    enriching = args.enrichment_concurrency
    if enriching is None:
        enriching = max(settings.enrichment_workers, 1)
    if "runs" not in jobs:
        concurrency = 0
    if "enrichment" not in jobs:
        enriching = 0

    async def work(dsn: str) -> int:
        if settings.migrate_on_start:
            await apply_migrations(dsn)
        db = await Database.connect(
            dsn,
            1,
            concurrency + enriching + 5,
            application_name=WORKER,
            statement_timeout_seconds=settings.db_statement_timeout_seconds,
            idle_in_transaction_timeout_seconds=settings.db_idle_in_transaction_timeout_seconds,
        )
        try:  # as `serve` does: no master key (or the wrong one) over sealed content, no start
            await check_keys(db, crypto.active())
        except KeyConfigurationError as exc:
            await db.close()
            print(f"threadline worker: {exc}", file=sys.stderr, flush=True)
            return 2
        from threadline.streaming.redis_channel import start_wake

        wake = start_wake(db, settings.broadcast_url)  # hubs on Redis hear of the runs' events through it
        own = dataclasses.replace(settings, database_url=dsn, enrichment_workers=enriching)
        worker = Worker(db, own, concurrency)
        enrichment = EnrichmentWorker(db, own, args.enrichment_lease)
        tiers = start_tiers(
            db, settings.tiers_interval_seconds
        )  # the cold-tier pass (tiers/), when configured
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        embeddings: Embeddings | None = None
        try:
            if "runs" in jobs:
                await worker.start()
            await enrichment.start()  # nothing when `enriching` is 0
            if "embeddings" in jobs:
                embeddings = start_embeddings(db, own)  # the embedding indexer, when a provider is set
            doing = []
            if "runs" in jobs:
                doing.append(f"runs (queue {worker.queue!r}, concurrency {concurrency})")
            if "enrichment" in jobs:
                doing.append(f"enrichment (concurrency {enriching})")
            if "embeddings" in jobs:
                indexing = (
                    embeddings.embedder.name if embeddings is not None else "off: THREADLINE_EMBEDDINGS"
                )
                doing.append(f"embeddings ({indexing})")
            print(
                f"threadline worker {worker.id}: pid {os.getpid()}, queue {worker.queue!r}, "
                f"concurrency {concurrency}; {', '.join(doing)}",
                flush=True,
            )
            await stop.wait()
        finally:
            # Work in flight goes back to the queues at once: another worker takes it without waiting for a lease.
            if embeddings is not None:
                await embeddings.close()
            await enrichment.stop()
            await worker.stop()
            await stop_tiers(tiers)
            if wake is not None:
                await wake.stop()
            await db.close()
        indexed = embeddings.indexer.indexed if embeddings is not None and embeddings.indexer else 0
        print(
            f"threadline worker {worker.id}: stopped after {worker.executed} runs, {enrichment.finished} "
            f"enrichment jobs, {indexed} messages embedded",
            flush=True,
        )
        return 0

    return with_database(settings, work)


# The commands other packages add to the parser (each module's `add_commands(sub)`), by name, in the order help lists
# them. Only the module of the command being run is imported: each pulls in its package (documents' imports
# graphql-core, ~75 ms), and a command's start is paid by every `threadline import` of a file. Top-level help, a
# mistyped command or none import them all (tests/test_cli_parser.py checks this table against them).
COMMAND_MODULES = {
    "import": "threadline.porting.commands",
    "export": "threadline.porting.commands",
    "documents": "threadline.documents.commands",
    "audit": "threadline.audit.commands",
    "pii": "threadline.privacy.commands",
    "tiers": "threadline.tiers.commands",
    "keys": "threadline.crypto.commands",
}
BUILT_IN = ("serve", "migrate", "export-schema", "tenant-create", "worker")


def _command_modules(argv: list[str] | None) -> list[str]:
    """The modules whose commands the parser needs for `argv` (None: the process's arguments): the named
    command's, none for a built-in one, all of them otherwise."""
    args = sys.argv[1:] if argv is None else argv
    command = next((a for a in args if not a.startswith("-")), None)
    if command in BUILT_IN:
        return []
    if command in COMMAND_MODULES:
        return [COMMAND_MODULES[command]]
    return list(dict.fromkeys(COMMAND_MODULES.values()))


def build_parser(argv: list[str] | None = None, *, everything: bool = False) -> argparse.ArgumentParser:
    """The parser for `argv` (None: the process's arguments), with every command when `everything`."""
    parser = argparse.ArgumentParser(
        prog="threadline",
        description="Threadline: a GraphQL API for AI chat history. Uses DATABASE_URL, or an embedded "
        "PostgreSQL in THREADLINE_DATA_DIR when it is not set.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the HTTP and WebSocket server")
    serve.add_argument("--host", help="interface to bind (default THREADLINE_HOST or 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default THREADLINE_PORT or 8000)")
    serve.add_argument(
        "-v", "--verbose", action="store_true",
        help="debug logs, the embedded PostgreSQL's own output included (same as THREADLINE_LOG_LEVEL=debug)",
    )  # fmt: skip
    serve.add_argument(
        "--workers", type=int,
        help="server processes on the port (default THREADLINE_WORKERS, or one per core)",
    )  # fmt: skip
    serve.set_defaults(run=_serve)

    migrate = sub.add_parser("migrate", help="apply pending database migrations")
    migrate.set_defaults(run=_migrate)

    export_schema = sub.add_parser("export-schema", help="print the GraphQL schema (SDL)")
    export_schema.add_argument("--out", default="schema.graphql", help="file to write, or - for stdout")
    export_schema.set_defaults(run=_export_schema)

    tenant = sub.add_parser("tenant-create", help="create a tenant and its first admin; prints JSON")
    tenant.add_argument("name", help="tenant name")
    tenant.add_argument("--admin-email", required=True, help="email of the first admin user")
    tenant.set_defaults(run=_tenant_create)

    worker = sub.add_parser(
        "worker",
        help="execute runs, enrichment jobs (titles, summaries, tags) and embedding indexing (any number of "
        "workers share one database); stops on SIGTERM or Ctrl-C, handing its work in flight back",
    )
    worker.add_argument(
        "--jobs",
        type=_worker_jobs,
        help=f"what to do, comma-separated: {','.join(WORKER_JOBS)} (default all; embeddings only when "
        "THREADLINE_EMBEDDINGS names a provider)",
    )
    worker.add_argument(
        "--concurrency", type=int, help="runs at once (default THREADLINE_RUN_WORKERS, at least 1)"
    )
    worker.add_argument("--queue", help="queue to take runs from (default THREADLINE_RUN_QUEUE or 'default')")
    worker.add_argument(
        "--enrichment-concurrency",
        type=_count,
        help="enrichment jobs at once (default THREADLINE_ENRICHMENT_WORKERS, at least 1)",
    )
    worker.add_argument(
        "--enrichment-lease",
        type=_seconds,
        metavar="SECONDS",
        help="a job of a worker that stopped answering (killed, frozen, cut off) is taken over after this "
        "(default twice THREADLINE_ENRICHMENT_TIMEOUT_SECONDS plus 30)",
    )
    worker.set_defaults(run=_worker)

    modules = list(dict.fromkeys(COMMAND_MODULES.values())) if everything else _command_modules(argv)
    for module in modules:
        importlib.import_module(module).add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    args = build_parser(argv).parse_args(argv)
    try:
        settings = Settings.from_env()
        from threadline import crypto

        crypto.install_from(settings)  # every command's pools open sealed content, and its writers seal
    except ValueError as exc:
        print(f"threadline: {exc}", file=sys.stderr)
        return 2
    from threadline.observability.logs import configure as configure_logging

    verbose = bool(getattr(args, "verbose", False))
    configure_logging(
        settings.log_json,
        logging.DEBUG if verbose else logging.getLevelNamesMapping()[settings.log_level.upper()],
    )
    from threadline.crypto.startup import KeyConfigurationError

    try:
        return int(args.run(args, settings))
    except KeyConfigurationError as exc:  # a command that reads or writes content over keys it cannot open
        print(f"threadline: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
