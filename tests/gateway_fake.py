"""A fake OpenAI-compatible upstream (a Starlette app on uvicorn, 127.0.0.1) for the gateway's tests.

Models: fake-ok streams "Hello", " there", "!" then usage 11/3 · fake-tools answers with a `get_weather` tool
call (id call_1, arguments streamed in two pieces) unless the last message is a tool result, then with
"It is sunny in <the result>" · fake-400 refuses with HTTP 400 and an OpenAI error object · fake-broken
streams one delta, then an error event · fake-slow streams 200 deltas "w0 ", "w1 ", ... 20 ms apart ·
fake-empty answers `[DONE]` alone · fake-garbage streams one delta, then a data line that is not JSON ·
fake-hang streams one delta, then nothing for a minute.
Every request body and its headers are recorded.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.harness import free_port

MODELS = (
    "fake-ok",
    "fake-tools",
    "fake-400",
    "fake-broken",
    "fake-slow",
    "fake-empty",
    "fake-garbage",
    "fake-hang",
)
USAGE = {"prompt_tokens": 11, "completion_tokens": 3, "total_tokens": 14}


def _chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": "fake",
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
    }


def _sse(value: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(value).encode() + b"\n\n"


class FakeUpstream:
    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.port = free_port()
        app = Starlette(routes=[Route("/v1/chat/completions", self.complete, methods=["POST"])])
        self.server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> None:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline, "the fake upstream did not start"
            time.sleep(0.02)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)

    async def complete(self, request: Request) -> Response:
        body = json.loads(await request.body())
        self.requests.append(body)
        self.headers.append(dict(request.headers))
        model = body["model"]
        if model == "fake-400":
            error = {"message": "bad thing", "type": "invalid_request_error", "param": "tools", "code": "bad"}
            return JSONResponse({"error": error}, status_code=400)
        if model == "fake-empty":
            return Response(b"data: [DONE]\n\n", media_type="text/event-stream")
        return StreamingResponse(self.stream(model, body["messages"]), media_type="text/event-stream")

    async def stream(self, model: str, messages: list[dict[str, Any]]) -> AsyncIterator[bytes]:
        yield _sse(_chunk({"role": "assistant", "content": ""}))
        if model == "fake-tools" and messages[-1]["role"] != "tool":
            call = {
                "index": 0,
                "id": "call_1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": ""},
            }
            yield _sse(_chunk({"tool_calls": [call]}))
            for piece in ('{"city": ', '"Paris"}'):
                yield _sse(_chunk({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}))
            yield _sse(_chunk({}, "tool_calls"))
        elif model == "fake-tools":
            for piece in ("It is sunny in ", str(messages[-1]["content"])):
                yield _sse(_chunk({"content": piece}))
            yield _sse(_chunk({}, "stop"))
        elif model == "fake-broken":
            yield _sse(_chunk({"content": "partial"}))
            yield _sse({"error": {"message": "overloaded", "type": "server_error"}})
            return
        elif model == "fake-garbage":
            yield _sse(_chunk({"content": "partial"}))
            yield b"data: {not json\n\n"
            return
        elif model == "fake-hang":
            yield _sse(_chunk({"content": "waiting"}))
            await asyncio.sleep(60)
            return
        elif model == "fake-slow":
            for i in range(200):
                yield _sse(_chunk({"content": f"w{i} "}))
                await asyncio.sleep(0.02)
            yield _sse(_chunk({}, "stop"))
        else:
            for piece in ("Hello", " there", "!"):
                yield _sse(_chunk({"content": piece}))
            yield _sse(_chunk({}, "stop"))
        yield _sse({**_chunk({}), "choices": [], "usage": USAGE})
        yield b"data: [DONE]\n\n"


def fake_upstream() -> Iterator[FakeUpstream]:
    fake = FakeUpstream()
    fake.start()
    yield fake
    fake.stop()
