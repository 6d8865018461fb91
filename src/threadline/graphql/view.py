"""The thin strawberry GraphQL app: context creation, transport errors as GraphQL errors, WS auth."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import orjson
from cross_web import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL
from strawberry.exceptions import ConnectionRejectionError
from strawberry.subscriptions import GRAPHQL_TRANSPORT_WS_PROTOCOL

from threadline.errors import ErrorCode, ThreadlineError
from threadline.graphql.context import Context


def error_response(message: str, code: ErrorCode, status: int, **extensions: Any) -> JSONResponse:
    return JSONResponse(
        {"data": None, "errors": [{"message": message, "extensions": {"code": code.value, **extensions}}]},
        status_code=status,
    )


class ThreadlineGraphQL(GraphQL[Context, None]):
    def __init__(self, schema: Any, services: Any, *, graphiql: bool) -> None:
        super().__init__(
            schema,
            graphql_ide="graphiql" if graphiql else None,
            # Only graphql-transport-ws: the legacy graphql-ws protocol had an auth bypass.
            subscription_protocols=(GRAPHQL_TRANSPORT_WS_PROTOCOL,),
            keep_alive=True,
            keep_alive_interval=15,
            connection_init_wait_timeout=timedelta(seconds=services.settings.ws_init_timeout_seconds),
            max_subscriptions_per_connection=services.settings.ws_max_operations,
        )
        self.services = services

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        request = Request(scope=scope, receive=receive)
        try:
            response = await self.run(request)
        except HTTPException as exc:
            code = ErrorCode.NOT_FOUND if exc.status_code == 404 else ErrorCode.BAD_USER_INPUT
            response = error_response(exc.reason, code, exc.status_code)
        await response(scope, receive, send)

    def encode_json(self, data: object) -> str:
        # orjson is ~8x faster than json.dumps on big results (a 10,000-node threadTree is ~7 MB); str, not
        # bytes, so WebSocket messages stay text frames. Non-ASCII is sent as UTF-8 rather than \u escapes.
        try:
            return orjson.dumps(data).decode()
        except TypeError:  # values orjson rejects (ints beyond 64 bits, ...) that json may still encode
            return json.dumps(data, separators=(",", ":"))

    def parse_json(self, data: str | bytes) -> Any:
        # HTTP only (WebSocket messages go through decode_json). Strawberry expects an object (or a list,
        # for batches): any other JSON value, or bytes that are not text, would fail deep inside it as a
        # 500. They are the client's error.
        try:
            value = self.decode_json(data)
        except (ValueError, UnicodeDecodeError) as exc:
            raise HTTPException(400, "Unable to parse request body as JSON") from exc
        if not isinstance(value, dict | list):
            raise HTTPException(400, "A GraphQL request must be a JSON object")
        return value

    async def get_context(self, request: Request | WebSocket, response: Response | WebSocket) -> Context:
        authorization = request.headers.get("authorization") if isinstance(request, Request) else None
        return Context(
            db=self.services.db,
            settings=self.services.settings,
            authorization=authorization,
            services=self.services,
            request=request,
            response=response,
        )

    async def on_ws_connect(self, context: Context) -> dict[str, object] | None:
        """Authenticate the socket from `connection_init` ({"authorization": "Bearer ..."}); 4403 otherwise."""
        params = context.connection_params if isinstance(context.connection_params, dict) else {}
        authorization = params.get("authorization") or params.get("Authorization")
        context.authorization = authorization if isinstance(authorization, str) else None
        try:
            await context.principal()
        except ThreadlineError as exc:
            raise ConnectionRejectionError({"code": exc.code.value, "message": exc.message}) from exc
        return None
