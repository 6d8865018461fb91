"""`threadline serve --workers N`: N server processes on one port (issue 14 item 4).

The parent starts the embedded PostgreSQL once (when no DATABASE_URL is given) and applies the migrations once;
then uvicorn's supervisor binds the port and spawns the workers, which inherit the listening socket and accept
from it in turn. Each worker is a whole app: its own pool, stream hub and run worker. What must hold across
processes already goes through PostgreSQL (rate-limit buckets, the event log and NOTIFY, run claims,
`principal.changed`), so nothing is shared in memory.

Stopping: Ctrl-C or SIGTERM reach the supervisor, which asks every worker to stop (SIGTERM: graceful, in
flight requests finish within THREADLINE_SHUTDOWN_GRACE_SECONDS, sockets close with 1012) and waits for them;
then the parent leaves the embedded PostgreSQL (cli.py), so none is left behind. A worker that dies is
replaced by the supervisor.

Metrics from every worker are aggregated through prometheus-client's multiprocess mode: the parent makes the
directory (PROMETHEUS_MULTIPROC_DIR) the workers write to, and removes it at the end.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from typing import Any

from threadline.settings import Settings

APP_FACTORY = "threadline.serving:worker_app"
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
PARENT_ENV = "THREADLINE_SERVE_PARENT_PID"
PR_SET_PDEATHSIG = 1


def worker_count(requested: int | None, settings: Settings) -> int:
    """`--workers`, else THREADLINE_WORKERS; 0 (the default): one per core."""
    count = requested if requested is not None else settings.workers
    return count if count > 0 else max(os.cpu_count() or 1, 1)


def worker_app() -> Any:
    """The app in one worker process (uvicorn's factory): settings from the environment the parent set."""
    import logging

    from threadline.app import create_app
    from threadline.observability.logs import configure as configure_logging

    _stop_with_parent()
    settings = Settings.from_env()
    configure_logging(settings.log_json, logging.getLevelNamesMapping()[settings.log_level.upper()])
    return create_app(settings)


def _stop_with_parent() -> None:
    """A worker whose parent is killed outright (SIGKILL, OOM) gets SIGTERM and stops gracefully, instead of
    holding the port as an orphan (Linux: PR_SET_PDEATHSIG)."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != int(os.environ.get(PARENT_ENV, os.getppid())):
        os.kill(os.getpid(), signal.SIGTERM)  # the parent died before the line above


def serve_workers(settings: Settings, dsn: str, host: str, port: int, workers: int, verbose: bool) -> None:
    """Runs `workers` processes on host:port until Ctrl-C or SIGTERM; returns once they all stopped."""
    import uvicorn

    from threadline.db.migrate import apply_migrations

    if settings.migrate_on_start:
        import asyncio

        asyncio.run(apply_migrations(dsn))  # once, before any worker starts
    metrics_dir = tempfile.mkdtemp(prefix="threadline-metrics-")
    environment = _worker_environment(settings, workers, dsn, metrics_dir, verbose)
    saved = {name: os.environ.get(name) for name in environment}
    os.environ.update(environment)  # spawned workers read it
    try:
        uvicorn.run(
            APP_FACTORY,
            factory=True,
            workers=workers,
            host=host,
            port=port,
            log_level=None,
            log_config=None,
            ws_max_size=settings.ws_max_message_bytes,
            timeout_graceful_shutdown=max(1, round(settings.shutdown_grace_seconds)),
            ws_per_message_deflate=False,
            # The app derives the client address (THREADLINE_TRUSTED_PROXIES, ratelimits.addresses); uvicorn's own
            # handling trusted X-Forwarded-For from 127.0.0.1 and ::1 (FORWARDED_ALLOW_IPS), from any local process.
            proxy_headers=False,
        )
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        shutil.rmtree(metrics_dir, ignore_errors=True)


def _worker_environment(
    settings: Settings, workers: int, dsn: str, metrics_dir: str, verbose: bool
) -> dict[str, str]:
    # THREADLINE_DB_POOL_MAX is the server's, split among the workers: one pool of 20 per core would pass
    # PostgreSQL's max_connections (100 by default) from five cores on.
    pool_max = max(2, -(-settings.db_pool_max // workers))
    env = {
        "DATABASE_URL": dsn,  # the embedded server the parent started (or the configured one)
        "THREADLINE_MIGRATE_ON_START": "false",  # done once by the parent
        "THREADLINE_DB_POOL_MAX": str(pool_max),
        "THREADLINE_DB_POOL_MIN": str(min(settings.db_pool_min, pool_max)),
        MULTIPROC_ENV: metrics_dir,
        PARENT_ENV: str(os.getpid()),
    }
    if verbose:
        env["THREADLINE_LOG_LEVEL"] = "debug"
    return env
