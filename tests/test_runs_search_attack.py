"""Hostile input against assistant runs and the cost bounds around them: a model streaming without end, NUL
characters and unstorable tool calls from the model, runSubmitToolOutputs with thousands of call ids, and run
messages multiplied by aliases and connections past the operation's output budget."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from tests.api import create_conversation, reply, start_thread
from tests.harness import Actor, Loop, ServerThread
from tests.test_runs_support import TERMINAL, on, runs_server, settle

LIMIT = 5_000  # THREADLINE_MESSAGE_MAX_BYTES of the servers here
BUDGET = 60_000  # THREADLINE_RESPONSE_MAX_BYTES
RUN_CREATE = "mutation($i: RunCreateInput!) { runCreate(input: $i) { id } }"
RUN = """query($id: ID!) { run(id: $id) { id status lastError { code message }
  requiredAction { toolCalls { id } } output { content chunks { index content } } } }"""
STATUS = "query($id: ID!) { run(id: $id) { status } }"
ENDED = TERMINAL | {"REQUIRES_ACTION"}
SUBMIT = "mutation($r: ID!, $o: [ToolOutputInput!]!) { runSubmitToolOutputs(runId: $r, outputs: $o) { id } }"
TOOL = {"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}


def _sse(payload: Any) -> bytes:
    return f"data: {json.dumps(payload)}\n\n".encode()


def _chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
    return _sse({"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})


def _calls(count: int, arguments: str = "{}") -> bytes:
    pieces = [
        {"index": i, "id": f"call_{i}", "type": "function", "function": {"name": "f", "arguments": arguments}}
        for i in range(count)
    ]
    return _chunk({"tool_calls": pieces})


class HostileModel:
    """An OpenAI-compatible upstream whose answers a run must not store as they are, by model name: `endless`
    streams 1,000-byte deltas far past the message limit; `nul` a delta holding NUL; `many-calls` 100 tool calls
    (a message holds 64 parts); `nul-call` a tool call whose arguments hold NUL; `big-call` one whose arguments
    are past the message limit."""

    answers = {
        "endless": lambda: [_chunk({"content": "x" * 1_000}) for _ in range(3_000)] + [_chunk({}, "stop")],
        "nul": lambda: [_chunk({"content": "a\u0000b"}), _chunk({}, "stop")],
        "surrogate": lambda: [_chunk({"content": "a\ud800b"}), _chunk({}, "stop")],
        "many-calls": lambda: [_calls(100), _chunk({}, "tool_calls")],
        "nul-call": lambda: [_calls(1, '{"a": "\u0000"}'), _chunk({}, "tool_calls")],
        "big-call": lambda: [_calls(1, json.dumps({"a": "y" * LIMIT})), _chunk({}, "tool_calls")],
    }

    def __init__(self) -> None:
        answers = self.answers

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                return None

            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Connection", "close")
                self.end_headers()
                try:
                    for piece in answers[body["model"]]():
                        self.wfile.write(piece)
                    self.wfile.write(b"data: [DONE]\n\n")
                    self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):  # the run stopped reading: expected
                    pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"


@pytest.fixture(scope="module")
def model() -> Iterator[HostileModel]:
    fake = HostileModel()
    fake.thread.start()
    yield fake
    fake.httpd.shutdown()
    fake.httpd.server_close()


@pytest.fixture(scope="module")
def runs(dsn: str, model: HostileModel) -> Iterator[ServerThread]:
    server = runs_server(
        dsn,
        run_workers=2,
        run_timeout_seconds=20.0,
        run_stale_seconds=5.0,
        message_max_bytes=LIMIT,
        openai_base_url=model.base_url,
        openai_api_key="sk-test",
        openai_models=tuple(HostileModel.answers),
        openai_default_model="endless",
        response_max_bytes=BUDGET,
    )
    server.start()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def _settle(runs: ServerThread, loop: Loop, dsn: str) -> Iterator[None]:
    yield
    settle(loop, dsn, runs.app.state.services.settings.run_queue)


@pytest.fixture
def owner(admin: Actor, runs: ServerThread) -> Actor:
    return on(runs, admin)


def _run(owner: Actor, model: str, **fields: Any) -> dict[str, Any]:
    question = start_thread(owner, create_conversation(owner), "question")
    created = owner.client.ok(
        RUN_CREATE, {"i": {"messageId": question, "provider": "openai", "model": model, **fields}}
    )
    run_id = created["runCreate"]["id"]
    deadline = time.monotonic() + 20
    while owner.client.ok(STATUS, {"id": run_id})["run"]["status"] not in ENDED:
        assert time.monotonic() < deadline, "the run did not end"
        time.sleep(0.05)
    return owner.client.ok(RUN, {"id": run_id})["run"]  # type: ignore[no-any-return]


def test_a_model_streaming_past_the_message_limit_is_cut_there(owner: Actor) -> None:
    run = _run(owner, "endless")
    assert run["status"] == "INCOMPLETE"
    assert run["lastError"]["code"] == "OUTPUT_TOO_LARGE"
    content = run["output"]["content"]
    assert content == "x" * LIMIT
    assert "".join(c["content"] for c in run["output"]["chunks"]) == content


@pytest.mark.parametrize("name", ["nul", "surrogate"])
def test_nul_or_a_lone_surrogate_from_the_model_is_stored_as_a_replacement_character(
    owner: Actor, name: str
) -> None:
    run = _run(owner, name)
    assert (run["status"], run["output"]["content"]) == ("COMPLETED", "a\ufffdb"), run


@pytest.mark.parametrize("name", ["many-calls", "nul-call", "big-call"])
def test_tool_calls_a_message_cannot_hold_fail_the_run(owner: Actor, name: str) -> None:
    run = _run(owner, name, tools=[TOOL])
    assert run["status"] == "FAILED", run
    assert run["lastError"]["code"] == "PROVIDER_BAD_STREAM"
    assert run["requiredAction"] is None


def test_run_messages_count_against_the_output_budget_across_aliases(owner: Actor) -> None:
    conversation = create_conversation(owner)
    question = start_thread(owner, conversation, "q" * 4_000)
    run = owner.client.ok(RUN_CREATE, {"i": {"messageId": question, "provider": "echo"}})["runCreate"]
    deadline = time.monotonic() + 20
    while owner.client.ok(STATUS, {"id": run["id"]})["run"]["status"] != "COMPLETED":
        assert time.monotonic() < deadline, "the run did not end"
        time.sleep(0.05)
    page = "runs(first: 100) { nodes { message { content } output { content } } }"
    one = owner.client.ok("query($c: ID!) { conversation(id: $c) { " + page + " } }", {"c": conversation})
    assert len(one["conversation"]["runs"]["nodes"][0]["output"]["content"]) > 4_000
    # Ten aliases of the page return about 80 KB of message content: past the budget, refused by count.
    aliased = " ".join(f"a{i}: conversation(id: $c) {{ {page} }}" for i in range(10))
    error = owner.client.error("query($c: ID!) { " + aliased + " }", {"c": conversation})
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert (error["extensions"]["limitName"], error["extensions"]["limit"]) == ("responseBytes", BUDGET)


def _waiting_echo_run(owner: Actor) -> str:
    question = start_thread(owner, create_conversation(owner), "question")
    run = owner.client.ok(RUN_CREATE, {"i": {"messageId": question, "provider": "echo", "tools": [TOOL]}})
    deadline = time.monotonic() + 20
    while owner.client.ok(STATUS, {"id": run["runCreate"]["id"]})["run"]["status"] != "REQUIRES_ACTION":
        assert time.monotonic() < deadline, "the run did not wait"
        time.sleep(0.05)
    return str(run["runCreate"]["id"])


def test_thousands_of_unknown_call_ids_are_refused_without_echoing_them(owner: Actor) -> None:
    run_id = _waiting_echo_run(owner)
    # 3,000 outputs: 9,001 values, within THREADLINE_QUERY_MAX_INPUT_VALUES (more are refused before any resolver).
    outputs = [{"toolCallId": f"id{i:05d}" + "z" * 200, "output": ""} for i in range(3_000)]
    error = owner.client.error(SUBMIT, {"r": run_id, "o": outputs})
    assert (error["extensions"]["code"], error["extensions"]["argument"]) == ("BAD_USER_INPUT", "outputs")
    assert error["message"].count("id0") == 5
    assert error["message"].endswith("and 2995 more")
    assert len(error["message"]) < 1_000
    # An output the message cannot hold names the argument the caller sent.
    error = owner.client.error(SUBMIT, {"r": run_id, "o": [{"toolCallId": "call_echo_1", "output": "a\x00"}]})
    assert (error["extensions"]["code"], error["extensions"]["argument"]) == ("BAD_USER_INPUT", "outputs")
    error = owner.client.error(
        SUBMIT, {"r": run_id, "o": [{"toolCallId": "call_echo_1", "output": "a" * LIMIT}]}
    )
    assert (error["extensions"]["argument"], error["extensions"]["limit"]) == ("outputs", LIMIT)
    assert owner.client.ok(STATUS, {"id": run_id})["run"]["status"] == "REQUIRES_ACTION"


def test_a_run_at_the_end_of_a_deep_branch_reads_only_what_its_prompt_can_hold(
    owner: Actor, monkeypatch: pytest.MonkeyPatch
) -> None:
    from threadline.runs import output_repository

    conversation = create_conversation(owner)
    parent = start_thread(owner, conversation, "m0")
    for i in range(1, 120):
        parent = reply(owner, parent, f"m{i}", "ASSISTANT" if i % 2 else None)
    read: list[int] = []
    real = output_repository.messages_by_ids

    async def counted(db: Any, tenant_id: Any, ids: list[Any]) -> Any:
        read.append(len(ids))
        return await real(db, tenant_id, ids)

    monkeypatch.setattr(output_repository, "messages_by_ids", counted)
    run = owner.client.ok(
        RUN_CREATE, {"i": {"messageId": parent, "provider": "echo", "maxHistoryMessages": 2}}
    )
    deadline = time.monotonic() + 20
    while owner.client.ok(STATUS, {"id": run["runCreate"]["id"]})["run"]["status"] != "COMPLETED":
        assert time.monotonic() < deadline, "the run did not end"
        time.sleep(0.05)
    # Two messages of a 120-deep branch make the prompt: one batch of the newest ancestors is read, not 120.
    assert 0 < sum(read) <= 60, read


def test_the_newest_ancestors_give_the_prompt_the_whole_branch_gives() -> None:
    """Wherever `context_rows` may stop reading, the prompt is the one the whole branch makes (tool calls and
    their results, deleted, empty and long messages, every history limit and a small token budget)."""
    import random

    from threadline.runs.context import ContextTooLarge, build_prompt, suffix_suffices

    rng = random.Random(7)

    def row(role: str, content: str, parts: Any = None, deleted: bool = False) -> dict[str, Any]:
        return {"role": role, "content": content, "parts": parts, "deleted_at": 1 if deleted else None}

    def branch() -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        for _ in range(rng.randint(1, 25)):
            kind = rng.random()
            text = "w" * rng.choice([0, 5, 40, 400])
            if kind < 0.2:
                ids = [f"c{rng.randint(0, 3)}" for _ in range(rng.randint(1, 2))]
                calls = [{"type": "tool_call", "id": i, "name": "f", "arguments": "{}"} for i in ids]
                rows.append(row("ASSISTANT", text, calls))
                for i in ids if rng.random() < 0.8 else ids[:1]:
                    result = {"type": "tool_result", "tool_call_id": i, "content": "r", "is_error": False}
                    rows.append(row("TOOL", "r", [result], deleted=rng.random() < 0.1))
            else:
                rows.append(
                    row(rng.choice(["USER", "ASSISTANT", "SYSTEM", "TOOL"]), text, deleted=kind > 0.9)
                )
        rows.append(row("USER", "question"))
        return rows

    def prompt(rows: list[dict[str, Any]], limit: int, budget: int) -> Any:
        try:
            return build_prompt(rows, "be brief", limit, budget)  # type: ignore[arg-type]
        except ContextTooLarge as exc:
            return str(exc)

    for _ in range(3_000):
        rows, limit, budget = branch(), rng.randint(1, 12), rng.choice([60, 200, 10_000])
        whole = prompt(rows, limit, budget)
        for start in range(len(rows)):
            if suffix_suffices(rows[start:], limit, budget):  # type: ignore[arg-type]
                assert prompt(rows[start:], limit, budget) == whole, (rows, start, limit, budget)


@pytest.mark.parametrize(
    ("arguments", "variables"),
    [
        ("(input: {}, first: 100)", {}),
        ("(input: {first: 100})", {}),
        ("(input: $i)", {"i": {"first": 100}}),
        ("(input: {first: $n})", {"n": 100}),
    ],
)
def test_search_pages_asked_for_inside_input_are_priced_like_the_argument(
    admin: Actor, arguments: str, variables: dict[str, Any]
) -> None:
    """`input.first` (deprecated, still served) returns 100 results like `first:`; priced as the default 20 page,
    a query of real cost 20,501 passed the 20,000 limit."""
    inner = "conversation { runs(first: 100) { nodes { id } } threads(first: 100) { nodes { replyCount } } }"
    declared = (
        "($i: ConversationSearchInput)" if "$i" in arguments else "($n: Int)" if "$n" in arguments else ""
    )
    query = f"query{declared} {{ search{arguments} {{ edges {{ node {{ {inner} }} }} }} }}"
    error = admin.client.error(query, variables)
    assert (error["extensions"]["limitName"], error["extensions"]["actual"]) == ("cost", 20_501)
    # Over the page cap inside input: refused before any work, like the argument.
    over = {k: ({"first": 101} if k == "i" else 101) for k in variables}
    big = admin.client.error(
        query.replace("100) { edges", "101) { edges").replace("first: 100})", "first: 101})"), over
    )
    assert (big["extensions"]["code"], big["extensions"]["limitName"]) == ("BAD_USER_INPUT", "listSize")


def test_a_colleague_outside_the_conversation_learns_no_more_than_another_tenant(
    owner: Actor, make_user: Any, make_tenant: Any, runs: ServerThread
) -> None:
    """Run mutations on ids of a conversation the caller cannot see answer as for ids that do not exist."""
    run_id = _waiting_echo_run(owner)
    conversation = create_conversation(owner)
    question = start_thread(owner, conversation, "question")
    answer = owner.client.ok(
        'mutation($p: ID!) { messageReply(parentId: $p, input: {content: "a", role: ASSISTANT}) { id } }',
        {"p": question},
    )["messageReply"]["id"]
    outputs = [{"toolCallId": "call_echo_1", "output": "x"}]
    calls = [
        (RUN_CREATE, {"i": {"messageId": question}}),
        (SUBMIT, {"r": run_id, "o": outputs}),
        ("mutation($r: ID!) { runCancel(id: $r) { id } }", {"r": run_id}),
        ('mutation($m: ID!) { messageAppend(id: $m, delta: "x") { id } }', {"m": answer}),
        ("mutation($m: ID!) { messageFinish(id: $m) { id } }", {"m": answer}),
    ]
    colleague, stranger = on(runs, make_user(owner)), on(runs, make_tenant())
    for query, variables in calls:
        seen = [
            (e["extensions"]["code"], e["message"])
            for e in (colleague.client.error(query, variables), stranger.client.error(query, variables))
        ]
        assert seen[0] == seen[1], (query, seen)
        assert seen[0][0] == "NOT_FOUND"
    assert owner.client.ok(STATUS, {"id": run_id})["run"]["status"] == "REQUIRES_ACTION"


def test_mutations_spread_from_fragments_draw_from_the_rate_limits(
    admin: Actor, make_user: Any, server: ServerThread
) -> None:
    """`mutation { ...M } fragment M on Mutation { a: conversationCreate ... }` drew nothing from the mutation and
    run budgets (only fields and inline fragments were counted), so fragments lifted every per-window limit."""
    from tests.test_ratelimits import assign, post, profile

    member = make_user(admin)
    assign(admin, member, profile(admin, "m3r1", mutationsPerWindow=3, runsPerWindow=1))
    spread = """mutation { ...M } fragment M on Mutation { ...N b: conversationCreate(input: {title: "b"}) { id } }
      fragment N on Mutation { a: conversationCreate(input: {title: "a"}) { id } }"""
    assert "errors" not in post(server.url, member, spread).json()
    refused = post(server.url, member, spread).json()["errors"][0]["extensions"]
    assert (refused["code"], refused["budget"]) == ("RATE_LIMITED", "mutations")
    assert member.client.ok("{ conversations { totalCount } }") == {"conversations": {"totalCount": 2}}

    other = make_user(admin)
    assign(admin, other, profile(admin, "r1", runsPerWindow=1))
    conversation = create_conversation(other)
    questions = [start_thread(other, conversation, f"q{i}") for i in range(2)]
    runs = (
        "mutation($a: ID!, $b: ID!) { ...R } fragment R on Mutation { "
        + " ".join(f"{k}: runCreate(input: {{messageId: ${k}}}) {{ id }}" for k in "ab")
        + " }"
    )
    refused = post(server.url, other, runs, {"a": questions[0], "b": questions[1]}).json()["errors"][0]
    assert (refused["extensions"]["code"], refused["extensions"]["budget"]) == ("RATE_LIMITED", "runs")
