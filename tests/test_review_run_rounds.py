"""A run's tool rounds each cost the same whatever how many came before: the usage carried from earlier rounds is read
from the newest answered wait, not from every step of the run (a long agent run read all its steps on each round:
quadratic in its length). Rows are counted by wrapping the server's own transactions, never by time."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.api import create_conversation, start_thread
from tests.harness import Actor, Loop, ServerThread
from tests.test_runs_support import on, runs_server, settle
from threadline.db.database import Transaction

WEATHER = {
    "type": "function",
    "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {}}},
}
RUN_CREATE = "mutation($i: RunCreateInput!) { runCreate(input: $i) { id } }"
# No `steps`: the only reads of run_step are then the worker's.
RUN = """query($id: ID!) { run(id: $id) { status usage { promptTokens completionTokens }
  requiredAction { messageId toolCalls { id } } } }"""
MESSAGE = "query($id: ID!) { message(id: $id) { usage { promptTokens completionTokens } } }"
SUBMIT = """mutation($r: ID!, $o: [ToolOutputInput!]!) { runSubmitToolOutputs(runId: $r, outputs: $o) { status } }"""
ROUNDS = 6


@pytest.fixture(scope="module")
def runs(dsn: str) -> Iterator[ServerThread]:
    server = runs_server(dsn, run_workers=1, run_tool_outputs_timeout_seconds=600.0)
    server.start()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def _settle(runs: ServerThread, loop: Loop, dsn: str) -> Iterator[None]:
    yield
    settle(loop, dsn, runs.app.state.services.settings.run_queue)


class StepReads:
    """Rows of run_step that SELECTs inside the server's transactions returned."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.rows = 0
        fetch, fetchrow, fetchval = Transaction.fetch, Transaction.fetchrow, Transaction.fetchval
        reads = self

        def reading_steps(sql: str) -> bool:
            return "run_step" in sql and sql.lstrip().upper().startswith(("SELECT", "WITH"))

        async def counted_fetch(self: Transaction, sql: str, *args: Any) -> Any:
            rows = await fetch(self, sql, *args)
            if reading_steps(sql):
                reads.rows += len(rows)
            return rows

        async def counted_fetchrow(self: Transaction, sql: str, *args: Any) -> Any:
            row = await fetchrow(self, sql, *args)
            if reading_steps(sql) and row is not None:
                reads.rows += 1
            return row

        async def counted_fetchval(self: Transaction, sql: str, *args: Any) -> Any:
            value = await fetchval(self, sql, *args)
            if reading_steps(sql) and value is not None:
                reads.rows += 1
            return value

        monkeypatch.setattr(Transaction, "fetch", counted_fetch)
        monkeypatch.setattr(Transaction, "fetchrow", counted_fetchrow)
        monkeypatch.setattr(Transaction, "fetchval", counted_fetchval)


def _waiting(actor: Actor, run_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 20.0
    while True:
        run: dict[str, Any] = actor.client.ok(RUN, {"id": run_id})["run"]
        if run["status"] not in ("QUEUED", "IN_PROGRESS"):
            assert run["status"] == "REQUIRES_ACTION", run
            return run
        assert time.monotonic() < deadline, f"run stayed {run['status']}"
        time.sleep(0.05)


def test_each_tool_round_reads_one_step_row_however_many_rounds_came_before(
    admin: Actor, runs: ServerThread, monkeypatch: pytest.MonkeyPatch
) -> None:
    owner = on(runs, admin)
    question = start_thread(owner, create_conversation(owner), "What's the weather?")
    reads = StepReads(monkeypatch)
    mark = reads.rows
    # echo with a forced tool calls it again after every round of outputs.
    run_id = owner.client.ok(
        RUN_CREATE,
        {
            "i": {
                "messageId": question,
                "provider": "echo",
                "tools": [WEATHER],
                "toolChoice": {"type": "function", "function": {"name": "get_weather"}},
            }
        },
    )["runCreate"]["id"]

    per_round: list[int] = []
    outputs: list[dict[str, int]] = []
    for round_ in range(ROUNDS):
        waiting = _waiting(owner, run_id)
        per_round.append(reads.rows - mark)
        usage = owner.client.ok(MESSAGE, {"id": waiting["requiredAction"]["messageId"]})["message"]["usage"]
        outputs.append(usage)
        # Every round's usage is carried into the run's: the total of its outputs' so far.
        assert waiting["usage"] == {
            "promptTokens": sum(u["promptTokens"] for u in outputs),
            "completionTokens": sum(u["completionTokens"] for u in outputs),
        }
        [call] = waiting["requiredAction"]["toolCalls"]
        mark = reads.rows  # the run waits: nothing reads its steps until the outputs queue it again
        owner.client.ok(SUBMIT, {"r": run_id, "o": [{"toolCallId": call["id"], "output": f"round {round_}"}]})

    # The first round has no earlier wait; each later one reads the newest wait's row only (before: 2, 4, 6, ...).
    assert per_round == [0] + [1] * (ROUNDS - 1)
