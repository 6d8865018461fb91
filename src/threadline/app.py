"""The Starlette app factory: routes and the lifespan that owns the pool and the stream hub."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hmac
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.middleware.errors import ServerErrorMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from threadline import crypto
from threadline.auth.credentials import CredentialCache
from threadline.crypto.startup import check as check_keys
from threadline.db import Database
from threadline.db.embedded import EmbeddedPostgres, resolve_database_url
from threadline.db.migrate import apply_migrations
from threadline.files import routes as files_routes
from threadline.graphql import graphiql
from threadline.graphql.http_fast import LeanGraphQL
from threadline.graphql.view import ThreadlineGraphQL
from threadline.observability.repository import ping
from threadline.ratelimits.addresses import TrustedProxies
from threadline.settings import Settings
from threadline.sharing.page import share_page

log = logging.getLogger("threadline")


@dataclass
class Services:
    """Long-lived resources, created by the lifespan and reached by resolvers through the context."""

    settings: Settings
    db: Database = None  # type: ignore[assignment]
    hub: Any = None
    runs: Any = None  # the run worker (threadline.runs.worker.Worker)
    embeddings: Any = None  # embedder and indexer (threadline.embeddings.service.Embeddings); None when off
    enrichment: Any = None  # titles, summaries, tags (threadline.enrich.worker.EnrichmentWorker)
    replica: Any = None  # the read replica search reads from (threadline.db.replica.ReadReplica); None: none
    embedded: EmbeddedPostgres | None = None
    credentials: CredentialCache | None = None  # principals by Authorization value (auth.credentials)
    background: list[Any] = field(default_factory=list)


class ThreadlineApp(Starlette):
    """Starlette, with POST /graphql handed to the lean endpoint (graphql.http_fast `LeanGraphQL.front`) before
    the exception middleware and the router: a plain operation only passes the app's error handling and its
    own middleware (request ids, CORS) on its way in and out (issue 14: the fixed cost of a request)."""

    lean: LeanGraphQL | None = None
    _front: ASGIApp | None = None
    # THREADLINE_TRUSTED_PROXIES: the one place a request's client address is derived (ratelimits.addresses);
    # None: the TCP peer is the client.
    proxies: TrustedProxies | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.proxies is not None and scope["type"] != "lifespan":
            self.proxies.apply(scope)
        lean = self.lean
        if (
            lean is None
            or scope["type"] != "http"
            or scope["method"] != "POST"
            or scope["path"] != "/graphql"
            or scope.get("root_path")
        ):
            await super().__call__(scope, receive, send)
            return
        scope["app"] = self
        if self.middleware_stack is None:
            self.middleware_stack = self.build_middleware_stack()
        if self._front is None:
            self._front = self._front_stack(lean)
        await lean.front(scope, receive, send, self.middleware_stack, self._front)

    def _front_stack(self, lean: LeanGraphQL) -> ASGIApp:
        """What `build_middleware_stack` builds, without the exception middleware and router (nothing raises
        an HTTPException on the lean path), ending at the lean endpoint."""
        handler = None
        for key, value in self.exception_handlers.items():
            if key in (500, Exception):
                handler = value
        app: ASGIApp = lean.answer_admitted
        for cls, args, kwargs in reversed(self.user_middleware):
            app = cls(app, *args, **kwargs)
        return ServerErrorMiddleware(app, handler=handler, debug=self.debug)


def metrics_authorized(authorization: str | None, token: str | None) -> bool:
    """Whether `authorization` is `Bearer <token>` (compared in constant time)."""
    scheme, _, given = (authorization or "").partition(" ")
    if token is None or scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(given.strip().encode(), token.encode())


def tune_garbage_collector(gen0_threshold: int) -> None:
    """Fewer, cheaper cyclic collections. A response of 10,000 rows allocates hundreds of thousands of
    objects; with the default threshold (700) that triggers full collections mid-request that walk every
    object the process holds (~100 ms measured on a 10,000-node threadTree). Freezing what exists after
    start-up (modules, schema, pools) takes it out of every later collection."""
    if gen0_threshold <= 0:
        return
    gc.collect()
    gc.freeze()
    gc.set_threshold(gen0_threshold, 20, 100)


def create_app(settings: Settings | None = None) -> Starlette:
    from threadline.schema import schema

    settings = settings or Settings.from_env()
    if settings.tracing_enabled:  # a schema of this app's own, with spans (off: nothing of tracing is loaded)
        from threadline.graphql.tracing import traced
        from threadline.schema import build_schema

        schema = traced(build_schema())
    services = Services(settings=settings, credentials=CredentialCache(settings.credential_cache_seconds))
    graphql = ThreadlineGraphQL(schema, services, graphiql=not settings.production)
    graphql_http = LeanGraphQL(graphql)  # plain JSON POSTs skip strawberry's HTTP view (http_fast)
    from threadline.gateway.routes import Gateway

    gateway = Gateway(services)  # the OpenAI-compatible /v1 endpoints

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        import jwt  # noqa: F401 - auth.tokens imports it when first needed (for the CLI); a server loads it now, not in a request

        dsn, services.embedded = resolve_database_url(settings.database_url, settings.data_dir)
        services.settings = replace(settings, database_url=dsn)
        if settings.migrate_on_start:
            await apply_migrations(dsn)
        keyring = crypto.install_from(settings)  # before the pool: its connections open sealed content
        services.db = await Database.connect(
            dsn,
            settings.db_pool_min,
            settings.db_pool_max,
            statement_timeout_seconds=settings.db_statement_timeout_seconds,
            idle_in_transaction_timeout_seconds=settings.db_idle_in_transaction_timeout_seconds,
            pooler=settings.database_pooler,
        )
        await check_keys(
            services.db, keyring
        )  # no key (or the wrong one) over sealed content: refuse to start
        from threadline.streaming.redis_channel import start_wake

        wake = start_wake(services.db, settings.broadcast_url)  # Redis: wake-ups after commit, not NOTIFY
        if settings.read_database_url:
            from threadline.db.replica import ReadReplica

            replica = await Database.connect(
                settings.read_database_url,
                settings.db_pool_min,
                settings.db_pool_max,
                statement_timeout_seconds=settings.db_statement_timeout_seconds,
                idle_in_transaction_timeout_seconds=settings.db_idle_in_transaction_timeout_seconds,
                pooler=settings.database_pooler,
            )
            services.replica = ReadReplica(services.db, replica, settings.read_replica_max_wait_seconds)
        from threadline.streaming.hub import StreamHub
        from threadline.streaming.maintenance import start_maintenance, stop_task

        services.hub = StreamHub(services.db, services.settings)
        services.hub.sessions.credentials = services.credentials  # principal.changed empties it
        await services.hub.start()
        maintenance = start_maintenance(services.db, services.settings)
        from threadline.runs.worker import Worker

        services.runs = Worker(services.db, services.settings)
        await services.runs.start()
        from threadline.embeddings.service import start as start_embeddings

        services.embeddings = start_embeddings(services.db, services.settings)
        from threadline.enrich.worker import EnrichmentWorker

        services.enrichment = EnrichmentWorker(services.db, services.settings)
        await services.enrichment.start()
        from threadline.porting.retention import start_retention, stop_retention

        retention = start_retention(services.db, services.settings)
        if retention is not None:
            services.background.append(retention)
        from threadline.files.service import purge_forever

        # Directory-stored files whose blobs were deleted (with their messages, or an erased user) are unlinked.
        file_purge = asyncio.create_task(
            purge_forever(services.db, services.settings), name="threadline-file-purge"
        )
        instrumentor = None
        if settings.tracing_enabled:
            from threadline.graphql.tracing import instrument_database

            instrumentor = instrument_database()
        from threadline.observability.metrics import start_metrics_sync

        metrics_sync = start_metrics_sync(services)
        tune_garbage_collector(settings.gc_gen0_threshold)
        try:
            yield
        finally:
            if metrics_sync is not None:
                await stop_task(metrics_sync)
            await stop_task(maintenance)
            await stop_retention(retention)
            file_purge.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await file_purge
            if services.embeddings is not None:
                await services.embeddings.close()
            await services.runs.stop(requeue=True)  # a graceful shutdown returns claimed runs to the queue
            await services.enrichment.stop()
            await gateway.close()
            await services.hub.stop()
            if wake is not None:
                await wake.stop()
            if services.replica is not None:
                await services.replica.close()
            await services.db.close()
            if services.embedded is not None:
                services.embedded.stop()
            from threadline.observability.metrics import process_stopped

            process_stopped()
            if instrumentor is not None:
                instrumentor.uninstrument()

    async def healthz(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> JSONResponse:
        try:
            await ping(services.db)
        except Exception as exc:  # noqa: BLE001 - any failure means not ready
            return JSONResponse({"status": "unavailable", "error": type(exc).__name__}, status_code=503)
        return JSONResponse({"status": "ready"})

    async def metrics(request: Request) -> PlainTextResponse:
        from threadline.observability.metrics import METRICS

        # Metrics reveal every tenant's activity: only a scraper holding the operator's token reads them.
        if not metrics_authorized(request.headers.get("authorization"), settings.metrics_token):
            return PlainTextResponse("metrics need the bearer token", 401, {"WWW-Authenticate": "Bearer"})
        body = await METRICS.render(services)
        return PlainTextResponse(body, media_type="text/plain; version=0.0.4")

    serve_metrics = settings.metrics_enabled and settings.metrics_token is not None
    if settings.metrics_enabled and not serve_metrics:
        log.warning(
            "/metrics is not served: set THREADLINE_METRICS_TOKEN (scrapers send it as a bearer token)"
        )

    from threadline.observability.requests import RequestIds
    from threadline.streaming.transport import CaptureDirectSockets

    # First: it must see the server's own `send` (streaming.direct writes frames to its socket).
    middleware = [Middleware(CaptureDirectSockets), Middleware(RequestIds)]
    if settings.cors_origins:
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=list(settings.cors_origins),
                allow_methods=["GET", "POST", "OPTIONS"],
                allow_headers=["Authorization", "Content-Type", "X-Request-Id", "X-Threadline-Session"],
                expose_headers=[
                    "X-Request-Id",
                    "RateLimit-Limit",
                    "RateLimit-Remaining",
                    "RateLimit-Reset",
                    "Retry-After",
                ],
                max_age=600,
            )
        )
    app = ThreadlineApp(
        routes=[
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            *([Route("/metrics", metrics)] if serve_metrics else []),
            # GraphiQL's assets, from the package (development mode only, like the page itself).
            *([] if settings.production else [Mount(graphiql.STATIC_PATH, app=graphiql.static_files())]),
            Route("/share/{token}", share_page, methods=["GET"]),
            Route("/files", files_routes.upload, methods=["POST"]),
            Route("/files/{file_id}", files_routes.download, methods=["GET"]),
            Route("/graphql", graphql_http, methods=["GET", "POST"]),
            WebSocketRoute("/graphql", graphql),
            *gateway.routes(),
        ],
        middleware=middleware,
        lifespan=lifespan,
    )
    app.state.services = services
    app.state.graphql_http = graphql_http
    app.lean = graphql_http
    app.proxies = TrustedProxies(settings.trusted_proxies) if settings.trusted_proxies else None
    return app
