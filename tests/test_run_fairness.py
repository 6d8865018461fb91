"""Fair claiming of runs: one tenant's backlog does not hold up another tenant's runs, and no tenant has more than
THREADLINE_RUN_MAX_EXECUTING_PER_TENANT runs executing at once across every worker, even when workers claim at
once; a run whose worker died frees its place when it is recovered.

Runs ask a fake OpenAI-compatible endpoint that holds each completion until the test opens the gate of its prompt,
so which runs execute is decided by the test, never by timing: a run the workers took is one whose prompt arrived.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import asyncpg
import pytest

from tests.api import create_conversation, join, start_thread
from tests.harness import Actor, Loop, ServerThread, test_settings
from tests.test_runs_recovery import WorkerProcess
from tests.test_runs_support import create_run, on, read_run, runs_server, settle, wait_for
from threadline.ids import Kind, decode_id, encode_id
from threadline.runs import repository as runs_repo

CAP = 2
MODEL = "gate"
EXECUTING = {"IN_PROGRESS"}


class GatedUpstream:
    """A fake OpenAI-compatible endpoint: POST /v1/chat/completions is `answer`ed (by a subclass) with the text of
    the prompt's last message, whose gate the test opens (`open`); records the texts that arrived, in order."""

    def __init__(self) -> None:
        self.arrived: list[str] = []
        self._gates: dict[str, threading.Event] = {}
        self._lock = threading.Lock()
        self.closing = threading.Event()
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                return None

            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    upstream.answer(self, str(body["messages"][-1]["content"]))

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def _gate(self, text: str) -> threading.Event:
        with self._lock:
            return self._gates.setdefault(text, threading.Event())

    def open(self, text: str) -> None:
        self._gate(text).set()

    def wait_arrived(self, text: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.arrived:
            assert time.monotonic() < deadline, f"{text!r} never reached the model; arrived: {self.arrived}"
            time.sleep(0.02)

    def answer(self, handler: BaseHTTPRequestHandler, text: str) -> None:
        raise NotImplementedError

    def reset(self) -> None:
        with self._lock:
            self.arrived.clear()
            self._gates.clear()

    def close(self) -> None:
        self.closing.set()
        self.httpd.shutdown()
        self.httpd.server_close()


class Gate(GatedUpstream):
    """Answers the completion at once, whole, once the gate of the prompt's last message is open."""

    def answer(self, handler: BaseHTTPRequestHandler, text: str) -> None:
        with self._lock:
            self.arrived.append(text)
        gate = self._gate(text)
        while not gate.is_set() and not self.closing.is_set():
            gate.wait(0.1)
        chunks = [
            {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": "done"}}]},
            {
                "object": "chat.completion.chunk",
                "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
            },
        ]
        handler.send_response(200)  # a client gone meanwhile: GatedUpstream's handler ends quietly
        handler.send_header("Content-Type", "text/event-stream")
        handler.send_header("Connection", "close")
        handler.end_headers()
        for chunk in chunks:
            handler.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
        handler.wfile.write(b"data: [DONE]\n\n")
        handler.wfile.flush()


PROVIDER: dict[str, Any] = {
    "openai_api_key": "sk-test",
    "openai_models": (MODEL,),
    "openai_default_model": MODEL,
}


@pytest.fixture(scope="module")
def gate() -> Iterator[Gate]:
    found = Gate()
    yield found
    found.close()


@pytest.fixture(scope="module")
def api(dsn: str, gate: Gate) -> Iterator[ServerThread]:
    """Where runs are created and read: no workers of its own; it recovers runs of workers that died (1 s)."""
    server = runs_server(
        dsn,
        run_workers=0,
        run_recovery_seconds=0.2,
        run_stale_seconds=1.0,
        openai_base_url=gate.base_url,
        **PROVIDER,
    )
    server.start()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def _fresh_gate(gate: Gate) -> None:
    gate.reset()


@pytest.fixture
def queue(api: ServerThread) -> str:
    return str(api.app.state.services.settings.run_queue)


@pytest.fixture
def workers(dsn: str, gate: Gate, queue: str, loop: Loop) -> Iterator[Callable[..., ServerThread]]:
    """Starts servers that execute the queue's runs (with the per-tenant cap), stopped after the test."""
    started: list[ServerThread] = []

    def start(concurrency: int, cap: int = CAP) -> ServerThread:
        worker = ServerThread(
            test_settings(
                dsn,
                migrate_on_start=False,
                run_queue=queue,
                run_workers=concurrency,
                run_max_executing_per_tenant=cap,
                run_poll_seconds=0.2,
                run_heartbeat_seconds=0.2,
                run_recovery_seconds=0,
                openai_base_url=gate.base_url,
                **PROVIDER,
            )
        )
        worker.start()
        started.append(worker)
        return worker

    yield start
    gate.closing.set()
    for worker in started:
        worker.stop()
    settle(loop, dsn, queue)
    gate.closing.clear()


def queue_runs(actor: Actor, prompts: list[str]) -> dict[str, str]:
    """A run of the gated model answering each prompt (a thread of its own), in order: prompt -> run id."""
    cid = create_conversation(actor)
    return {
        p: create_run(actor, start_thread(actor, cid, p), provider="openai", model=MODEL)["id"]
        for p in prompts
    }


def statuses(actor: Actor, runs: dict[str, str]) -> dict[str, str]:
    return {prompt: read_run(actor, run_id)["status"] for prompt, run_id in runs.items()}


def test_a_tenant_s_backlog_does_not_hold_up_another_tenant_s_run(
    admin: Actor,
    make_tenant: Callable[..., Actor],
    api: ServerThread,
    gate: Gate,
    workers: Callable[..., ServerThread],
) -> None:
    busy, other = on(api, admin), on(api, make_tenant())
    backlog = queue_runs(busy, [f"busy {i}" for i in range(6)])
    (waiting,) = queue_runs(other, ["other 0"]).values()
    workers(4)  # four places, of which one tenant may take CAP

    gate.wait_arrived("other 0")
    assert wait_for(other, waiting, EXECUTING)["status"] == "IN_PROGRESS"
    gate.wait_arrived("busy 1")
    assert statuses(busy, backlog) == {
        "busy 0": "IN_PROGRESS",
        "busy 1": "IN_PROGRESS",
        **{f"busy {i}": "QUEUED" for i in range(2, 6)},
    }

    # A run that ends frees its tenant's place: the tenant's oldest queued run takes it.
    gate.open("busy 0")
    assert wait_for(busy, backlog["busy 0"])["status"] == "COMPLETED"
    gate.wait_arrived("busy 2")
    assert statuses(busy, backlog) == {
        "busy 0": "COMPLETED",
        "busy 1": "IN_PROGRESS",
        "busy 2": "IN_PROGRESS",
        **{f"busy {i}": "QUEUED" for i in range(3, 6)},
    }
    assert sorted(p for p in gate.arrived if p.startswith("busy")) == ["busy 0", "busy 1", "busy 2"]


def test_the_cap_holds_for_a_tenant_s_users_with_two_workers_claiming_at_once(
    admin: Actor,
    make_user: Callable[..., Actor],
    make_tenant: Callable[..., Actor],
    api: ServerThread,
    gate: Gate,
    workers: Callable[..., ServerThread],
) -> None:
    workers(3)
    workers(3)  # six places, idle: every run queued below wakes both at once
    owner = on(api, admin)
    member = on(api, make_user(admin))
    backlog = queue_runs(owner, [f"owner {i}" for i in range(3)])
    cid = create_conversation(owner)
    join(owner, member, cid)
    backlog |= {
        p: create_run(member, start_thread(member, cid, p), provider="openai", model=MODEL)["id"]
        for p in (f"member {i}" for i in range(3))
    }
    other = on(api, make_tenant())
    others = queue_runs(other, ["other 0", "other 1"])

    # The other tenant's runs are taken after the backlog was queued, so both workers had it to take from.
    for prompt, run_id in others.items():
        gate.wait_arrived(prompt)
        assert wait_for(other, run_id, EXECUTING)["status"] == "IN_PROGRESS"
    executing = [p for p, s in statuses(owner, backlog).items() if s == "IN_PROGRESS"]
    assert len(executing) == CAP, statuses(owner, backlog)
    assert sorted(p for p in gate.arrived if not p.startswith("other")) == sorted(executing)


def test_the_cap_holds_when_many_claims_race(
    admin: Actor, api: ServerThread, loop: Loop, dsn: str, queue: str
) -> None:
    """Eight claims at once, in eight transactions, for one tenant's ten queued runs: exactly CAP are taken."""
    runs = queue_runs(on(api, admin), [f"race {i}" for i in range(10)])

    async def race() -> list[Any]:
        connections = [await asyncpg.connect(dsn) for _ in range(8)]

        async def claim(conn: asyncpg.Connection, worker: str) -> Any:
            async with conn.transaction():
                return await runs_repo.claim_next(conn, queue, worker, max_per_tenant=CAP)

        try:
            return await asyncio.gather(*(claim(c, f"racer {i}") for i, c in enumerate(connections)))
        finally:
            for conn in connections:
                await conn.close()

    claimed = [row for row in loop.run(race()) if row is not None]
    assert len(claimed) == CAP
    executing = [p for p, s in statuses(on(api, admin), runs).items() if s == "IN_PROGRESS"]
    assert len(executing) == CAP


def test_a_run_whose_worker_died_frees_its_tenant_s_place_once_recovered(
    admin: Actor,
    make_tenant: Callable[..., Actor],
    api: ServerThread,
    gate: Gate,
    workers: Callable[..., ServerThread],
    dsn: str,
    queue: str,
) -> None:
    busy, other = on(api, admin), on(api, make_tenant())
    backlog = queue_runs(busy, ["busy 0", "busy 1"])
    process = WorkerProcess(
        dsn,
        queue,
        THREADLINE_RUN_MAX_EXECUTING_PER_TENANT="1",
        THREADLINE_OPENAI_BASE_URL=gate.base_url,
        THREADLINE_OPENAI_API_KEY="sk-test",
        THREADLINE_OPENAI_MODELS=MODEL,
        THREADLINE_OPENAI_DEFAULT_MODEL=MODEL,
    )  # two places, of which the tenant may take one
    try:
        gate.wait_arrived("busy 0")
        (waiting,) = queue_runs(other, ["other 0"]).values()
        gate.wait_arrived("other 0")
        assert wait_for(other, waiting, EXECUTING)["status"] == "IN_PROGRESS"
        assert statuses(busy, backlog) == {"busy 0": "IN_PROGRESS", "busy 1": "QUEUED"}
        process.kill()
    finally:
        if process.proc.poll() is None:
            process.kill()

    # The API server's recovery expires the dead worker's runs; the place it held goes to the tenant's next run.
    assert wait_for(busy, backlog["busy 0"])["status"] == "EXPIRED"
    workers(1, cap=1)
    gate.wait_arrived("busy 1")
    assert wait_for(busy, backlog["busy 1"], EXECUTING)["status"] == "IN_PROGRESS"
    assert wait_for(other, waiting)["status"] == "EXPIRED"


def test_a_negative_cap_is_refused_at_start_naming_the_setting(dsn: str, queue: str) -> None:
    # It meant no cap at all, silently: the opposite of what a cap set below zero by mistake asks for.
    environment = {
        **os.environ,
        "DATABASE_URL": dsn,
        "THREADLINE_MIGRATE_ON_START": "0",
        "THREADLINE_RUN_QUEUE": queue,
        "THREADLINE_RUN_MAX_EXECUTING_PER_TENANT": "-1",
    }
    finished = subprocess.run(
        [sys.executable, "-m", "threadline.cli", "worker", "--jobs", "runs"],
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert finished.returncode != 0
    assert "THREADLINE_RUN_MAX_EXECUTING_PER_TENANT must be 0 (no cap) or more, got -1" in finished.stderr
    assert "threadline worker " not in finished.stdout


def test_a_claim_reads_one_entry_a_waiting_tenant_not_the_whole_queue(
    admin: Actor, api: ServerThread, loop: Loop, dsn: str, queue: str
) -> None:
    """A tenant with 3,000 queued runs: a claim takes its oldest reading a handful of index entries and rows (the
    statement sorted every queued run of the queue on each claim: 274 ms a claim with 200,000 queued)."""
    runs = queue_runs(on(api, admin), ["the oldest", "the next"])

    async def claim() -> tuple[Any, int]:
        conn = await asyncpg.connect(dsn)
        transaction = conn.transaction()
        await transaction.start()
        try:
            # 3,000 more of the tenant's runs, queued after the two: copies of the newest, each answering a copy of
            # its message (one active run a message) as a thread of its own, counted by the planner; all rolled back.
            await conn.execute(
                f"""CREATE TEMP TABLE backlog ON COMMIT DROP AS
                    SELECT r.*, g AS n FROM run r, generate_series(1, 3000) g
                    WHERE r.id = '{decode_id(runs["the next"], Kind.RUN)}';
                    CREATE TEMP TABLE asked ON COMMIT DROP AS
                    SELECT m.*, g AS n FROM message m, generate_series(1, 3000) g
                    WHERE m.id = (SELECT message_id FROM backlog LIMIT 1);
                    UPDATE asked SET id = gen_random_uuid();
                    UPDATE asked SET root_id = id, parent_id = NULL;
                    UPDATE backlog b SET id = gen_random_uuid(), created_at = b.created_at + interval '1 s',
                        message_id = (SELECT a.id FROM asked a WHERE a.n = b.n);
                    ALTER TABLE backlog DROP COLUMN n;
                    ALTER TABLE asked DROP COLUMN n;
                    INSERT INTO message SELECT * FROM asked;
                    INSERT INTO run SELECT * FROM backlog;
                    ANALYZE run"""
            )
            before = await conn.fetchval(_READ)
            claimed = await runs_repo.claim_next(conn, queue, "counted", max_per_tenant=CAP)
            return claimed, await conn.fetchval(_READ) - before
        finally:
            await transaction.rollback()
            await conn.close()

    claimed, read = loop.run(claim())
    assert encode_id(Kind.RUN, claimed["id"]) == runs["the oldest"]
    assert read < 100, read


# Rows and index entries of `run` and its indexes read so far in this transaction.
_READ = """SELECT sum(pg_stat_get_xact_tuples_returned(c.oid) + pg_stat_get_xact_tuples_fetched(c.oid))::bigint
           FROM pg_class c WHERE c.oid = 'run'::regclass
              OR c.oid IN (SELECT indexrelid FROM pg_index WHERE indrelid = 'run'::regclass)"""
