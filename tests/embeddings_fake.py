"""A fake OpenAI-compatible `/v1/embeddings` endpoint (Starlette on uvicorn, 127.0.0.1) for the tests and the
bench: it answers with the test embedder's vectors (threadline.embeddings.concepts), records each request, and
can be told to hold requests (`hold()`: they wait until `release()`), as a stuck provider does. A request
with an input holding REFUSED is refused with HTTP 400."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tests.harness import free_port
from threadline.embeddings.concepts import concept_vector

# A request holding an input with this word is refused with HTTP 400 (as a provider refuses an input too long).
REFUSED = "POISONPILL"


class FakeEmbeddings:
    def __init__(self, dimensions: int = 64) -> None:
        self.dimensions = dimensions
        self.requests: list[dict[str, Any]] = []
        self.authorizations: list[str | None] = []
        self.port = free_port()
        self._open = threading.Event()
        self._open.set()
        app = Starlette(routes=[Route("/v1/embeddings", self._embeddings, methods=["POST"])])
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> None:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline, "the fake embeddings endpoint did not start"
            time.sleep(0.02)

    def stop(self) -> None:
        self._open.set()
        self.server.should_exit = True
        self.thread.join(timeout=10)

    def hold(self) -> None:
        self._open.clear()

    def release(self) -> None:
        self._open.set()

    async def _embeddings(self, request: Request) -> JSONResponse:
        body = await request.json()
        self.requests.append(body)
        self.authorizations.append(request.headers.get("authorization"))
        while not self._open.is_set():
            await asyncio.sleep(0.02)
        if any(REFUSED in text for text in body["input"]):
            error = {"message": "This input is refused", "type": "invalid_request_error"}
            return JSONResponse({"error": error}, status_code=400)
        dimensions = int(body.get("dimensions") or self.dimensions)
        data = []
        for index, text in enumerate(body["input"]):
            vector = concept_vector(text, dimensions) or [0.0] * (dimensions - 1) + [1.0]
            data.append({"object": "embedding", "index": index, "embedding": vector})
        data.reverse()  # clients must order by `index`, not by position
        usage = {"prompt_tokens": len(body["input"]), "total_tokens": len(body["input"])}
        return JSONResponse({"object": "list", "data": data, "model": body["model"], "usage": usage})


def running(dimensions: int = 64) -> Iterator[FakeEmbeddings]:
    """A started endpoint for a fixture (`yield from running()`), stopped after."""
    endpoint = FakeEmbeddings(dimensions=dimensions)
    endpoint.start()
    yield endpoint
    endpoint.stop()
