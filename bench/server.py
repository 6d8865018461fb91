"""The real app under uvicorn for the benchmarks, with the stock or the fast executor.

    DATABASE_URL=... .venv/bin/python bench/server.py --port 8123 --executor stock|fast

Adds one route, `/_bench/sql-statements`: the SQL statements this process has sent for requests (the
server's own background tasks, all named `threadline-...`, are not counted, as in tests/test_threads.py).
"""

from __future__ import annotations

import argparse
import asyncio

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

    async def statements(request: Request) -> JSONResponse:
        return JSONResponse({"count": sql_statement_count()})

    app.router.routes.append(Route("/_bench/sql-statements", statements))
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", ws_per_message_deflate=False)


if __name__ == "__main__":
    main()
