"""Tool calls in runs (issue 17 item 2): tools passed to an OpenAI-compatible upstream started here, streamed
tool-call deltas assembled, REQUIRES_ACTION with requiredAction, runSubmitToolOutputs rounds, conflicts and
bad input, expiry, and the echo provider's deterministic tool mode."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from tests.api import create_conversation, snapshot, start_thread, stream_cursor
from tests.harness import Actor, Loop, ServerThread
from tests.test_runs_support import on, runs_server, settle, stream_events
from tests.ws import WsClient

RUN_FIELDS = """id status lastError { code message } tools toolChoice usage { promptTokens completionTokens }
  requiredAction { messageId toolCalls { id name arguments } }
  message { id role content } output { id content usage { promptTokens completionTokens } parts { __typename ... on ToolCallPart { id name arguments }
    ... on TextPart { text } } }
  steps { type status details }"""
RUN_CREATE = "mutation($i: RunCreateInput!) { runCreate(input: $i) { " + RUN_FIELDS + " } }"
RUN = "query($id: ID!) { run(id: $id) { " + RUN_FIELDS + " } }"
SUBMIT = (
    "mutation($r: ID!, $o: [ToolOutputInput!]!) { runSubmitToolOutputs(runId: $r, outputs: $o) { "
    + RUN_FIELDS
    + " } }"
)
CANCEL = "mutation($id: ID!) { runCancel(id: $id) { status } }"
MESSAGE = """query($id: ID!) { message(id: $id) { role content parentId parts { __typename
  ... on ToolResultPart { toolCallId content isError } } } }"""

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
TIME = {
    "type": "function",
    "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}},
}


def _sse(payload: Any) -> bytes:
    return f"data: {json.dumps(payload)}\n\n".encode()


def _chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {
        "object": "chat.completion.chunk",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


class FakeToolUpstream:
    """An OpenAI-compatible /v1/chat/completions that calls tools: while the prompt does not end with tool
    results it streams two tool calls in pieces (ids and names first, arguments split across chunks, the
    second call interleaved); after tool results it answers "Done: " and the results joined."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                return None

            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                fake.requests.append(body)
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Connection", "close")
                self.end_headers()
                for piece in fake.answer(body):
                    self.wfile.write(piece)
                    self.wfile.flush()

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def answer(self, body: dict[str, Any]) -> list[bytes]:
        messages = body["messages"]
        if body["model"] == "fake-noid":  # a call piece without an id: not a usable call
            piece = {"index": 0, "type": "function", "function": {"name": "get_time", "arguments": "{}"}}
            return [
                _sse(_chunk({"tool_calls": [piece]})),
                _sse(_chunk({}, "tool_calls")),
                b"data: [DONE]\n\n",
            ]
        if body["model"] == "fake-notlist":
            return [_sse(_chunk({"tool_calls": {"index": 0}})), b"data: [DONE]\n\n"]
        if messages[-1]["role"] == "tool":
            results = [m["content"] for m in messages if m["role"] == "tool"][-2:]
            return [
                _sse(_chunk({"role": "assistant", "content": "Done: "})),
                _sse(_chunk({"content": ", ".join(results)})),
                _sse(_chunk({}, "stop")),
                _sse({"choices": [], "usage": {"prompt_tokens": 30, "completion_tokens": 4}}),
                b"data: [DONE]\n\n",
            ]
        round_ = sum(1 for m in messages if m["role"] == "tool") // 2 + 1
        a, b = f"call_a{round_}", f"call_b{round_}"
        return [
            _sse(_chunk({"role": "assistant", "content": "Let me check."})),
            _sse(
                _chunk(
                    {
                        "tool_calls": [
                            {
                                "index": 0,
                                "id": a,
                                "type": "function",
                                "function": {"name": "get_weather", "arguments": ""},
                            }
                        ]
                    }
                )
            ),
            _sse(_chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"city": '}}]})),
            _sse(
                _chunk(
                    {
                        "tool_calls": [
                            {
                                "index": 1,
                                "id": b,
                                "type": "function",
                                "function": {"name": "get_time", "arguments": "{"},
                            }
                        ]
                    }
                )
            ),
            _sse(_chunk({"tool_calls": [{"index": 0, "function": {"arguments": '"Paris"}'}}]})),
            _sse(_chunk({"tool_calls": [{"index": 1, "function": {"arguments": "}"}}]})),
            _sse(_chunk({}, "tool_calls")),
            _sse({"choices": [], "usage": {"prompt_tokens": 20, "completion_tokens": 9}}),
            b"data: [DONE]\n\n",
        ]


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeToolUpstream]:
    fake = FakeToolUpstream()
    fake.thread.start()
    yield fake
    fake.httpd.shutdown()
    fake.httpd.server_close()


@pytest.fixture(scope="module")
def runs(dsn: str, upstream: FakeToolUpstream) -> Iterator[ServerThread]:
    server = runs_server(
        dsn,
        run_workers=2,
        run_timeout_seconds=10.0,
        openai_base_url=upstream.base_url,
        openai_api_key="sk-test",
        openai_models=("fake-tools", "fake-noid", "fake-notlist"),
        openai_default_model="fake-tools",
        run_tool_outputs_timeout_seconds=600.0,
    )
    server.start()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def _settle(runs: ServerThread, upstream: FakeToolUpstream, loop: Loop, dsn: str) -> Iterator[None]:
    upstream.requests.clear()
    yield
    settle(loop, dsn, runs.app.state.services.settings.run_queue)


@pytest.fixture
def owner(admin: Actor, runs: ServerThread) -> Actor:
    return on(runs, admin)


def _wait(actor: Actor, run_id: str, statuses: set[str], timeout: float = 20.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        run: dict[str, Any] = actor.client.ok(RUN, {"id": run_id})["run"]
        if run["status"] in statuses:
            return run
        if time.monotonic() > deadline:
            raise AssertionError(f"run stayed {run['status']}: {run}")
        time.sleep(0.05)


WAITING = {"REQUIRES_ACTION", "COMPLETED", "FAILED", "EXPIRED", "CANCELLED", "INCOMPLETE"}
ENDED = {"COMPLETED", "FAILED", "EXPIRED", "CANCELLED", "INCOMPLETE"}


def _question(actor: Actor) -> str:
    return start_thread(actor, create_conversation(actor), "What's the weather in Paris, and the time?")


def _openai_run(actor: Actor, message_id: str, **fields: Any) -> dict[str, Any]:
    run: dict[str, Any] = actor.client.ok(
        RUN_CREATE,
        {"i": {"messageId": message_id, "provider": "openai", "tools": [WEATHER, TIME], **fields}},
    )["runCreate"]
    return run


def test_a_tool_round_trip_against_an_openai_compatible_upstream(
    owner: Actor, upstream: FakeToolUpstream
) -> None:
    question = _question(owner)
    run = _openai_run(owner, question, toolChoice="auto")
    waiting = _wait(owner, run["id"], WAITING)
    assert waiting["status"] == "REQUIRES_ACTION"
    calls = [
        {"id": "call_a1", "name": "get_weather", "arguments": '{"city": "Paris"}'},
        {"id": "call_b1", "name": "get_time", "arguments": "{}"},
    ]
    assert waiting["requiredAction"]["toolCalls"] == calls
    assert waiting["requiredAction"]["messageId"] == waiting["output"]["id"]
    # The answer so far keeps its text and the calls as parts.
    assert waiting["output"]["content"] == "Let me check."
    assert waiting["output"]["parts"] == [
        {"__typename": "TextPart", "text": "Let me check."},
        *({"__typename": "ToolCallPart", **c} for c in calls),
    ]
    assert [(s["type"], s["status"]) for s in waiting["steps"]] == [
        ("MESSAGE_CREATION", "COMPLETED"),
        ("TOOL_CALLS", "IN_PROGRESS"),
    ]
    assert waiting["steps"][1]["details"]["toolCallIds"] == ["call_a1", "call_b1"]
    assert waiting["usage"] == waiting["output"]["usage"] == {"promptTokens": 20, "completionTokens": 9}
    # Tools and tool_choice were passed through as given.
    [first] = upstream.requests
    assert (first["tools"], first["tool_choice"]) == ([WEATHER, TIME], "auto")
    assert (waiting["tools"], waiting["toolChoice"]) == ([WEATHER, TIME], "auto")

    submitted = owner.client.ok(
        SUBMIT,
        {
            "r": run["id"],
            "o": [
                {"toolCallId": "call_b1", "output": "14:05"},
                {"toolCallId": "call_a1", "output": "18 C, rain"},
            ],
        },
    )["runSubmitToolOutputs"]
    assert (submitted["status"], submitted["requiredAction"]) == ("QUEUED", None)
    done = _wait(owner, run["id"], ENDED)
    assert done["status"] == "COMPLETED"
    assert done["output"]["content"] == "Done: 18 C, rain, 14:05"
    # The answer has its own round's usage; the run counts both rounds.
    assert done["output"]["usage"] == {"promptTokens": 30, "completionTokens": 4}
    assert done["usage"] == {"promptTokens": 50, "completionTokens": 13}
    assert [(s["type"], s["status"]) for s in done["steps"]] == [
        ("MESSAGE_CREATION", "COMPLETED"),
        ("TOOL_CALLS", "COMPLETED"),
        ("MESSAGE_CREATION", "COMPLETED"),
    ]
    # The second request had the calls and their results in context, in the calls' order.
    second = upstream.requests[1]["messages"]
    assert second[-3:] == [
        {
            "role": "assistant",
            "content": "Let me check.",
            "tool_calls": [
                {
                    "id": c["id"],
                    "type": "function",
                    "function": {"name": c["name"], "arguments": c["arguments"]},
                }
                for c in calls
            ],
        },
        {"role": "tool", "tool_call_id": "call_a1", "content": "18 C, rain"},
        {"role": "tool", "tool_call_id": "call_b1", "content": "14:05"},
    ]
    # The outputs are TOOL messages chained under the calls; the run now answers the last one.
    last = owner.client.ok(MESSAGE, {"id": done["message"]["id"]})["message"]
    assert (last["role"], last["content"]) == ("TOOL", "14:05")
    assert last["parts"] == [
        {"__typename": "ToolResultPart", "toolCallId": "call_b1", "content": "14:05", "isError": False}
    ]
    before = owner.client.ok(MESSAGE, {"id": last["parentId"]})["message"]
    assert (
        before["role"],
        before["content"],
        owner.client.ok(MESSAGE, {"id": before["parentId"]})["message"]["role"],
    ) == (
        "TOOL",
        "18 C, rain",
        "ASSISTANT",
    )


def test_any_number_of_rounds(owner: Actor, upstream: FakeToolUpstream) -> None:
    question = _question(owner)
    # echo with a forced tool calls it again after every round of outputs.
    run = owner.client.ok(
        RUN_CREATE,
        {
            "i": {
                "messageId": question,
                "provider": "echo",
                "tools": [WEATHER],
                "toolChoice": {"type": "function", "function": {"name": "get_weather"}},
            }
        },
    )["runCreate"]
    for round_ in range(3):
        waiting = _wait(owner, run["id"], WAITING)
        assert waiting["status"] == "REQUIRES_ACTION", waiting
        [call] = waiting["requiredAction"]["toolCalls"]
        assert call["name"] == "get_weather"
        owner.client.ok(
            SUBMIT, {"r": run["id"], "o": [{"toolCallId": call["id"], "output": f"round {round_}"}]}
        )
    assert owner.client.ok(CANCEL, {"id": run["id"]})["runCancel"]["status"] in ("CANCELLED", "CANCELLING")
    ended = _wait(owner, run["id"], ENDED)
    assert ended["status"] == "CANCELLED"
    assert [s["type"] for s in ended["steps"]].count("TOOL_CALLS") >= 3


def test_echo_tool_mode_is_deterministic(owner: Actor) -> None:
    question = _question(owner)
    run = owner.client.ok(
        RUN_CREATE, {"i": {"messageId": question, "provider": "echo", "tools": [WEATHER, TIME]}}
    )["runCreate"]
    waiting = _wait(owner, run["id"], WAITING)
    assert waiting["requiredAction"]["toolCalls"] == [
        {
            "id": "call_echo_1",
            "name": "get_weather",
            "arguments": json.dumps({"input": "What's the weather in Paris, and the time?"}),
        }
    ]
    owner.client.ok(SUBMIT, {"r": run["id"], "o": [{"toolCallId": "call_echo_1", "output": "sunny"}]})
    done = _wait(owner, run["id"], ENDED)
    assert (done["status"], done["output"]["content"]) == ("COMPLETED", "echo: sunny")
    # toolChoice none: a plain echo.
    other = owner.client.ok(
        RUN_CREATE,
        {"i": {"messageId": question, "provider": "echo", "tools": [WEATHER], "toolChoice": "none"}},
    )["runCreate"]
    assert (
        _wait(owner, other["id"], ENDED)["output"]["content"]
        == "echo: What's the weather in Paris, and the time?"
    )


def test_outputs_submitted_twice_or_to_a_run_not_waiting_are_a_conflict(owner: Actor) -> None:
    question = _question(owner)
    run = _openai_run(owner, question)
    _wait(owner, run["id"], WAITING)
    outputs = [{"toolCallId": "call_a1", "output": "x"}, {"toolCallId": "call_b1", "output": "y"}]
    owner.client.ok(SUBMIT, {"r": run["id"], "o": outputs})
    assert owner.client.code(SUBMIT, {"r": run["id"], "o": outputs}) == "CONFLICT"
    assert _wait(owner, run["id"], ENDED)["status"] == "COMPLETED"
    assert owner.client.code(SUBMIT, {"r": run["id"], "o": outputs}) == "CONFLICT"
    plain = owner.client.ok(RUN_CREATE, {"i": {"messageId": question, "provider": "echo"}})["runCreate"]
    _wait(owner, plain["id"], ENDED)
    assert owner.client.code(SUBMIT, {"r": plain["id"], "o": outputs}) == "CONFLICT"


def test_unknown_repeated_or_missing_call_ids_are_bad_input_and_store_nothing(
    owner: Actor, loop: Loop, dsn: str
) -> None:
    question = _question(owner)
    run = _openai_run(owner, question)
    _wait(owner, run["id"], WAITING)
    before = snapshot(loop, dsn)
    for outputs in (
        [{"toolCallId": "call_a1", "output": "x"}, {"toolCallId": "nope", "output": "y"}],
        [{"toolCallId": "call_a1", "output": "x"}],
        [{"toolCallId": "call_a1", "output": "x"}, {"toolCallId": "call_a1", "output": "y"}],
        [{"toolCallId": "call_a1", "output": "x\x00"}, {"toolCallId": "call_b1", "output": "y"}],
    ):
        error = owner.client.error(SUBMIT, {"r": run["id"], "o": outputs})
        assert error["extensions"]["code"] == "BAD_USER_INPUT", (outputs, error)
    assert snapshot(loop, dsn) == before
    assert _wait(owner, run["id"], WAITING)["status"] == "REQUIRES_ACTION"


@pytest.mark.parametrize(
    "fields",
    [
        {"tools": []},
        {"tools": [{"type": "retrieval"}]},
        {"tools": [{"type": "function", "function": {"name": "has space"}}]},
        {"tools": [WEATHER, WEATHER]},
        {"tools": [WEATHER], "toolChoice": {"type": "function", "function": {"name": "other"}}},
        {"tools": [WEATHER], "toolChoice": "sometimes"},
        {"toolChoice": "auto"},
        {
            "tools": [
                {
                    "type": "function",
                    "function": {"name": "deep", "parameters": json.loads("[" * 40 + "]" * 40)},
                }
            ]
        },
    ],
)
def test_bad_tools_are_refused(owner: Actor, fields: dict[str, Any]) -> None:
    question = _question(owner)
    error = owner.client.error(RUN_CREATE, {"i": {"messageId": question, "provider": "echo", **fields}})
    assert error["extensions"]["code"] == "BAD_USER_INPUT"


def test_the_tool_call_message_is_announced_done_before_the_run_waits(
    owner: Actor, loop: Loop, dsn: str
) -> None:
    question = _question(owner)
    run = _openai_run(owner, question)
    waiting = _wait(owner, run["id"], WAITING)
    events = stream_events(loop, dsn, _conversation_of(owner, question), ("message.done",))
    assert [e["payload"]["messageId"] for e in events] == [waiting["output"]["id"]]


def _conversation_of(actor: Actor, message_id: str) -> str:
    return str(
        actor.client.ok("query($id: ID!) { message(id: $id) { conversationId } }", {"id": message_id})[
            "message"
        ]["conversationId"]
    )


def test_reasoning_parts_are_left_out_of_the_context(owner: Actor, upstream: FakeToolUpstream) -> None:
    conversation = create_conversation(owner)
    root = start_thread(owner, conversation, "first")
    answer = owner.client.ok(
        "mutation($p: ID!, $i: MessageInput!) { messageReply(parentId: $p, input: $i) { id } }",
        {
            "p": root,
            "i": {
                "role": "ASSISTANT",
                "parts": [{"reasoning": "secret chain of thought"}, {"text": "visible"}],
            },
        },
    )["messageReply"]["id"]
    question = owner.client.ok(
        "mutation($p: ID!, $i: MessageInput!) { messageReply(parentId: $p, input: $i) { id } }",
        {"p": answer, "i": {"content": "and then?"}},
    )["messageReply"]["id"]
    run = owner.client.ok(RUN_CREATE, {"i": {"messageId": question, "provider": "openai"}})["runCreate"]
    _wait(owner, run["id"], WAITING)
    sent = upstream.requests[0]["messages"]
    assert sent == [
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "visible"},
        {"role": "user", "content": "and then?"},
    ]
    assert "tools" not in upstream.requests[0]
    owner.client.ok(CANCEL, {"id": run["id"]})


@pytest.fixture(scope="module")
def expiring(dsn: str) -> Iterator[ServerThread]:
    server = runs_server(dsn, run_workers=1, run_tool_outputs_timeout_seconds=0.5)
    server.start()
    yield server
    server.stop()


def test_a_run_left_waiting_expires(admin: Actor, expiring: ServerThread, loop: Loop, dsn: str) -> None:
    owner = on(expiring, admin)
    question = _question(owner)
    run = owner.client.ok(RUN_CREATE, {"i": {"messageId": question, "provider": "echo", "tools": [WEATHER]}})[
        "runCreate"
    ]
    ended = _wait(owner, run["id"], {"EXPIRED", "COMPLETED", "FAILED", "CANCELLED"})
    assert ended["status"] == "EXPIRED"
    assert ended["lastError"]["code"] == "TOOL_OUTPUTS_TIMEOUT"
    assert ended["requiredAction"] is None
    assert [(s["type"], s["status"]) for s in ended["steps"]] == [
        ("MESSAGE_CREATION", "COMPLETED"),
        ("TOOL_CALLS", "EXPIRED"),
    ]
    assert (
        owner.client.code(SUBMIT, {"r": run["id"], "o": [{"toolCallId": "call_echo_1", "output": "late"}]})
        == "CONFLICT"
    )
    errors = stream_events(loop, dsn, _conversation_of(owner, question), ("error",))
    assert [e["payload"]["code"] for e in errors] == ["TOOL_OUTPUTS_TIMEOUT"]
    settle(loop, dsn, expiring.app.state.services.settings.run_queue)


RUN_STATUS_EVENTS = """subscription($c: ID!, $s: String) { conversationEvents(conversationId: $c, since: $s) {
  type ... on RunStatusEvent { runId status } ... on MessageDoneEvent { messageId } } }"""


def test_status_changes_are_live_run_status_events(
    owner: Actor, runs: ServerThread, ws: Callable[..., WsClient], loop: Loop, dsn: str
) -> None:
    question = _question(owner)
    conversation = _conversation_of(owner, question)
    client = ws(owner, runs)
    client.subscribe(RUN_STATUS_EVENTS, {"c": conversation, "s": stream_cursor(owner)})
    run = _openai_run(owner, question)
    seen: list[tuple[str, str | None]] = []
    while ("run.status", "REQUIRES_ACTION") not in seen:
        event = client.next_event()["conversationEvents"]
        if event["type"] == "run.status":
            assert event["runId"] == run["id"]
            seen.append(("run.status", event["status"]))
        elif event["type"] == "message.done":
            seen.append(("message.done", None))
    assert seen == [("message.done", None), ("run.status", "REQUIRES_ACTION")]
    owner.client.ok(
        SUBMIT,
        {
            "r": run["id"],
            "o": [{"toolCallId": "call_a1", "output": "x"}, {"toolCallId": "call_b1", "output": "y"}],
        },
    )
    while True:
        event = client.next_event()["conversationEvents"]
        if event["type"] == "run.status":
            assert (event["runId"], event["status"]) == (run["id"], "QUEUED")
            break
    _wait(owner, run["id"], ENDED)
    logged = stream_events(loop, dsn, conversation, ("run.status",))
    assert [e["payload"]["status"] for e in logged] == ["REQUIRES_ACTION", "QUEUED"]


def test_a_subscription_that_does_not_select_run_status_events_does_not_get_them(
    owner: Actor, runs: ServerThread, ws: Callable[..., WsClient]
) -> None:
    question = _question(owner)
    conversation = _conversation_of(owner, question)
    client = ws(owner, runs)
    client.subscribe(
        "subscription($c: ID!, $s: String) { conversationEvents(conversationId: $c, since: $s) { type } }",
        {"c": conversation, "s": stream_cursor(owner)},
    )
    run = _openai_run(owner, question)
    _wait(owner, run["id"], WAITING)
    owner.client.ok(CANCEL, {"id": run["id"]})
    types: list[str] = []
    while "thread.activity" not in types or "message.done" not in types:
        types.append(client.next_event()["conversationEvents"]["type"])
    owner.client.ok(
        "mutation($p: ID!, $i: MessageInput!) { messageReply(parentId: $p, input: $i) { id } }",
        {"p": question, "i": {"content": "marker"}},
    )
    while types[-1] != "thread.activity" or len(types) < 3:
        types.append(client.next_event()["conversationEvents"]["type"])
    assert "run.status" not in types


def test_unpaired_tool_calls_and_results_are_sent_as_plain_text(
    owner: Actor, upstream: FakeToolUpstream
) -> None:
    """A call without its results (a run that expired waiting, an import) and a result without its call (an
    import) would make an OpenAI-compatible provider refuse the whole prompt."""
    conversation = create_conversation(owner)
    root = start_thread(owner, conversation, "first")
    reply_ = "mutation($p: ID!, $i: MessageInput!) { messageReply(parentId: $p, input: $i) { id } }"
    call = owner.client.ok(
        reply_,
        {
            "p": root,
            "i": {
                "role": "ASSISTANT",
                "parts": [{"text": "calling"}, {"toolCall": {"id": "lost", "name": "f", "arguments": "{}"}}],
            },
        },
    )["messageReply"]["id"]
    question = owner.client.ok(reply_, {"p": call, "i": {"content": "never mind"}})["messageReply"]["id"]
    orphan = owner.client.ok(
        reply_,
        {
            "p": question,
            "i": {"role": "TOOL", "parts": [{"toolResult": {"toolCallId": "nobody", "content": "42"}}]},
        },
    )["messageReply"]["id"]
    last = owner.client.ok(reply_, {"p": orphan, "i": {"content": "so?"}})["messageReply"]["id"]
    run = owner.client.ok(RUN_CREATE, {"i": {"messageId": last, "provider": "openai"}})["runCreate"]
    _wait(owner, run["id"], WAITING)
    assert upstream.requests[0]["messages"] == [
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "calling"},
        {"role": "user", "content": "never mind"},
        {"role": "user", "content": "42"},
        {"role": "user", "content": "so?"},
    ]
    owner.client.ok(CANCEL, {"id": run["id"]})


def test_deleting_the_calls_while_waiting_leaves_no_copy_of_them(owner: Actor, loop: Loop, dsn: str) -> None:
    question = _question(owner)
    run = _openai_run(owner, question)
    waiting = _wait(owner, run["id"], WAITING)
    owner.client.ok("mutation($id: ID!) { messageDelete(id: $id) { id } }", {"id": waiting["output"]["id"]})
    after = _wait(owner, run["id"], WAITING)
    assert (after["status"], after["requiredAction"]["toolCalls"]) == ("REQUIRES_ACTION", [])
    rows = snapshot(loop, dsn)
    assert not any('"Paris"}' in repr(row) for table in ("run", "run_step", "message") for row in rows[table])
    outputs = [{"toolCallId": "call_a1", "output": "x"}, {"toolCallId": "call_b1", "output": "y"}]
    assert owner.client.code(SUBMIT, {"r": run["id"], "o": outputs}) == "CONFLICT"
    owner.client.ok(CANCEL, {"id": run["id"]})


@pytest.mark.parametrize("model", ["fake-noid", "fake-notlist"])
def test_malformed_streamed_tool_calls_fail_the_run(owner: Actor, model: str) -> None:
    question = _question(owner)
    run = _openai_run(owner, question, model=model)
    ended = _wait(owner, run["id"], WAITING)
    assert (ended["status"], ended["lastError"]["code"]) == ("FAILED", "PROVIDER_BAD_STREAM")
