"""The real app under uvicorn for the benchmarks, with the stock or the fast executor.

    DATABASE_URL=... .venv/bin/python bench/server.py --port 8123 --executor stock|fast

Adds one route, `/_bench/sql-statements`: the SQL statements this process has sent for requests (the
server's own background tasks, all named `threadline-...`, are not counted, as in tests/test_threads.py).
"""

from __future__ import annotations

import argparse
import asyncio
import os

import uvicorn
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--executor", choices=("stock", "fast"), default="fast")
    args = parser.parse_args()

    import threadline.schema
    from threadline.app import create_app
    from threadline.db import database, sql_statement_count
    from threadline.settings import Settings

    count_statement = database._count

    def count_request_statements() -> None:
        task = asyncio.current_task()
        if task is None or not task.get_name().startswith("threadline-"):
            count_statement()

    database._count = count_request_statements

    if args.executor == "stock":
        threadline.schema.schema = threadline.schema.build_schema(fast_execution=False)
    app = create_app(Settings.from_env())

    # Hub-side latency: from an event's transaction start (created_at) to the moment the hub routes it.
    import time as _time

    from threadline.events.publish import notice
    from threadline.streaming.hub import StreamHub
    from threadline.streaming.listener import SupervisedPostgresBackend

    routed: list[float] = []
    route_seconds: list[float] = []  # how long routing one event took (the hub holds the loop meanwhile)
    notified: list[float] = []  # transaction start -> NOTIFY received (the writer's commit, roughly)
    notify_at: dict[int, float] = {}
    original_route = StreamHub._route
    original_notify = SupervisedPostgresBackend._on_notify

    def timed_notify(self: SupervisedPostgresBackend, *args: object) -> None:
        try:
            notify_at[notice(str(args[-1]))[1]] = _time.time()
        except ValueError:
            pass
        original_notify(self, *args)  # type: ignore[arg-type]

    timeline: dict[int, tuple[float, float, float]] = {}  # event id -> (NOTIFY seen, routed, flushed)
    original_flush = StreamHub._flush
    routed_ids: list[int] = []

    def timed_flush(self: StreamHub) -> None:
        original_flush(self)
        now = _time.time()
        for event_id in routed_ids:
            seen, routed, _ = timeline.get(event_id, (0.0, 0.0, 0.0))
            timeline[event_id] = (seen, routed, now)
        routed_ids.clear()

    StreamHub._flush = timed_flush  # type: ignore[method-assign]

    def timed_route(self: StreamHub, event: object) -> None:
        now = _time.time()
        routed_ids.append(event.id)  # type: ignore[attr-defined]
        timeline[event.id] = (notify_at.get(event.id, 0.0), now, 0.0)  # type: ignore[attr-defined]
        routed.append(now - event.created_at.timestamp())  # type: ignore[attr-defined]
        at = notify_at.pop(event.id, None)  # type: ignore[attr-defined]
        if at is not None:
            notified.append(at - event.created_at.timestamp())  # type: ignore[attr-defined]
        original_route(self, event)  # type: ignore[arg-type]
        route_seconds.append(_time.time() - now)

    SupervisedPostgresBackend._on_notify = timed_notify  # type: ignore[method-assign]

    StreamHub._route = timed_route  # type: ignore[method-assign]

    def summary(samples: list[float]) -> dict[str, float]:
        values = sorted(samples)
        samples.clear()
        if not values:
            return {"events": 0}
        pick = lambda q: round(values[min(len(values) - 1, int(q * len(values)))] * 1000, 1)  # noqa: E731
        return {"events": len(values), "p50_ms": pick(0.5), "p99_ms": pick(0.99), "max_ms": pick(1.0)}

    async def hub_timeline(request: Request) -> JSONResponse:
        """Per event: when the hub saw its NOTIFY, routed it, and flushed its frames (epoch seconds)."""
        return JSONResponse({str(k): v for k, v in timeline.items()})

    async def hub_latency(request: Request) -> JSONResponse:
        return JSONResponse(
            {**summary(routed), "notified": summary(notified), "route": summary(route_seconds)}
        )

    async def statements(request: Request) -> JSONResponse:
        return JSONResponse({"count": sql_statement_count()})

    app.router.routes.append(Route("/_bench/sql-statements", statements))
    app.router.routes.append(Route("/_bench/hub-latency", hub_latency))
    app.router.routes.append(Route("/_bench/hub-timeline", hub_timeline))
    from memory import memory_route, start_tracing_from_env  # bench/memory.py: RSS and tracemalloc by owner

    start_tracing_from_env()
    app.router.routes.append(memory_route())
    profile_to = os.environ.get("THREADLINE_BENCH_PROFILE")  # a file: cProfile the whole server run into it
    if profile_to:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    try:
        uvicorn.run(
            app,
            host="127.0.0.1",
            port=args.port,
            log_level="warning",
            ws_per_message_deflate=False,
            ws=os.environ.get("THREADLINE_BENCH_WS", "auto"),  # uvicorn's WebSocket implementation
        )
    finally:
        if profile_to:
            profiler.disable()
            profiler.dump_stats(profile_to)


if __name__ == "__main__":
    main()
