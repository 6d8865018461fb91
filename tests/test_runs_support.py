"""Shared by the run tests: a fake OpenAI-compatible streaming server, a server with its own run queue,
and GraphQL documents. (No tests here.)"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import asyncpg

from tests.harness import Actor, Client, Loop, ServerThread, test_settings, unique

RUN_FIELDS = """id status provider model instructions maxHistoryMessages attempt conversationId
  lastError { code message } createdAt startedAt completedAt cancelledAt failedAt expiredAt
  usage { promptTokens completionTokens totalTokens }
  message { id } output { id parentId role content model usage { promptTokens completionTokens totalTokens }
    chunks { index content } }
  steps { id type status details attempt completedAt cancelledAt failedAt expiredAt }"""
RUN_CREATE = "mutation($i: RunCreateInput!) { runCreate(input: $i) { " + RUN_FIELDS + " } }"
RUN_CANCEL = "mutation($id: ID!) { runCancel(id: $id) { " + RUN_FIELDS + " } }"
RUN = "query($id: ID!) { run(id: $id) { " + RUN_FIELDS + " } }"
TERMINAL = {"COMPLETED", "FAILED", "INCOMPLETE", "CANCELLED", "EXPIRED"}


def runs_server(dsn: str, **overrides: Any) -> ServerThread:
    """A server with its own run queue, so no other server's worker takes its runs."""
    defaults: dict[str, Any] = {"run_heartbeat_seconds": 0.2, "run_recovery_seconds": 0.5}
    settings = test_settings(dsn, migrate_on_start=False, run_queue=unique("q"), **{**defaults, **overrides})
    return ServerThread(settings)


def on(server: ServerThread, actor: Actor) -> Actor:
    """The same user, calling `server`."""
    return Actor(actor.tenant_id, actor.user_id, actor.api_key, Client(server.url, actor.api_key))


def create_run(actor: Actor, message_id: str, **fields: Any) -> dict[str, Any]:
    return actor.client.ok(RUN_CREATE, {"i": {"messageId": message_id, **fields}})["runCreate"]  # type: ignore[no-any-return]


def read_run(actor: Actor, run_id: str) -> dict[str, Any]:
    return actor.client.ok(RUN, {"id": run_id})["run"]  # type: ignore[no-any-return]


def wait_for(
    actor: Actor, run_id: str, statuses: set[str] = TERMINAL, timeout: float = 20.0
) -> dict[str, Any]:
    """The run once its status is one of `statuses` (polling; fails after `timeout`)."""
    deadline = time.monotonic() + timeout
    while True:
        run = read_run(actor, run_id)
        if run["status"] in statuses:
            return run
        if time.monotonic() > deadline:
            raise AssertionError(f"run stayed {run['status']}: {run}")
        time.sleep(0.05)


def wait_for_chunks(actor: Actor, run_id: str, count: int = 1, timeout: float = 20.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        run = read_run(actor, run_id)
        if run["output"] is not None and len(run["output"]["chunks"]) >= count:
            return run
        if time.monotonic() > deadline:
            raise AssertionError(f"no output chunks: {run}")
        time.sleep(0.02)


def stream_events(
    loop: Loop, dsn: str, conversation_public_id: str, types: tuple[str, ...]
) -> list[dict[str, Any]]:
    """The logged events of a conversation of the given types, in cursor order: [{type, payload}]."""
    conversation = conversation_public_id[4:]

    async def read() -> list[asyncpg.Record]:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")
            return await conn.fetch(
                """SELECT type, payload FROM stream_event WHERE conversation_id = $1::uuid AND type = ANY($2::varchar[])
                   ORDER BY id""",
                conversation,
                list(types),
            )
        finally:
            await conn.close()

    return [{"type": r["type"], "payload": r["payload"]} for r in loop.run(read())]


def settle(loop: Loop, dsn: str, queue: str | None, timeout: float = 20.0) -> None:
    """Wait until no run executes (and none waits in `queue`, whose server has workers), so the next
    test's truncation does not deadlock with a worker's transaction."""

    async def busy() -> int:
        conn = await asyncpg.connect(dsn)
        try:
            return int(
                await conn.fetchval(
                    """SELECT count(*) FROM run WHERE status IN ('IN_PROGRESS', 'CANCELLING')
                       OR (status = 'QUEUED' AND queue = $1)""",
                    queue or "",
                )
            )
        finally:
            await conn.close()

    deadline = time.monotonic() + timeout
    while loop.run(busy()) and time.monotonic() < deadline:
        time.sleep(0.05)


# a fake OpenAI-compatible server ----------------------------------------------------------------


def _sse(payload: Any) -> bytes:
    return f"data: {json.dumps(payload)}\n\n".encode()


def _delta(text: str, finish: str | None = None) -> dict[str, Any]:
    return {
        "object": "chat.completion.chunk",
        "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": finish}],
    }


class FakeOpenAI:
    """Answers POST /v1/chat/completions by model name; records every request body.

    fake-ok: "Hello", " there", "!" then usage 11/3 · fake-nousage: the same without usage ·
    fake-length: "Cut" then finish_reason length · fake-500: HTTP 500 · fake-garbage: one delta, then a
    line that is not an event · fake-badjson: a data line that is not JSON · fake-hang: one delta,
    then nothing · fake-slow: 100 deltas "w0 ", "w1 ", ... every 50 ms · fake-pair: waits until two
    requests are streaming at once, then streams like fake-ok.
    """

    MODELS = (
        "fake-ok",
        "fake-nousage",
        "fake-length",
        "fake-500",
        "fake-garbage",
        "fake-badjson",
        "fake-hang",
        "fake-slow",
        "fake-pair",
        "fake-small",
    )

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.pair = threading.Barrier(2, timeout=10)
        self.release = threading.Event()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                return None

            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                fake.requests.append(body)
                fake.headers.append(dict(self.headers))
                if self.path != "/v1/chat/completions":
                    self.send_error(404)
                    return
                fake.answer(self, body["model"])

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()

    def requests_for(self, model: str) -> list[dict[str, Any]]:
        return [r for r in self.requests if r["model"] == model]

    def answer(self, handler: BaseHTTPRequestHandler, model: str) -> None:
        if model == "fake-500":
            body = json.dumps({"error": {"message": "model overloaded"}}).encode()
            handler.send_response(500)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", str(len(body)))
            handler.end_headers()
            handler.wfile.write(body)
            return
        handler.send_response(200)
        handler.send_header("Content-Type", "text/event-stream")
        handler.send_header("Connection", "close")
        handler.end_headers()

        def send(data: bytes) -> None:
            handler.wfile.write(data)
            handler.wfile.flush()

        try:
            if model == "fake-pair":
                self.pair.wait()
            if model in ("fake-ok", "fake-pair", "fake-small", "fake-nousage"):
                for text in ("Hello", " there", "!"):
                    send(_sse(_delta(text)))
                send(
                    _sse(
                        {
                            "object": "chat.completion.chunk",
                            "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
                        }
                    )
                )
                if model != "fake-nousage":
                    send(
                        _sse(
                            {
                                "object": "chat.completion.chunk",
                                "choices": [],
                                "usage": {"prompt_tokens": 11, "completion_tokens": 3, "total_tokens": 14},
                            }
                        )
                    )
                send(b"data: [DONE]\n\n")
            elif model == "fake-length":
                send(_sse(_delta("Cut", "length")))
                send(b"data: [DONE]\n\n")
            elif model == "fake-garbage":
                send(_sse(_delta("partial")))
                send(b"this is not an event stream\n\n")
            elif model == "fake-badjson":
                send(_sse(_delta("partial")))
                send(b"data: {not json\n\n")
            elif model == "fake-hang":
                send(_sse(_delta("waiting")))
                self.release.wait(30)
            elif model == "fake-slow":
                for i in range(100):
                    send(_sse(_delta(f"w{i} ")))
                    if self.release.wait(0.05):
                        return
                send(_sse(_delta("", "stop")))
                send(b"data: [DONE]\n\n")
        except (BrokenPipeError, ConnectionResetError, threading.BrokenBarrierError):
            return


def fake_openai() -> Iterator[FakeOpenAI]:
    fake = FakeOpenAI()
    fake.start()
    yield fake
    fake.stop()
