"""Worker crash recovery with real `threadline worker` processes: SIGKILL mid-run, then the run is expired
or requeued by a live instance, never executed twice; a frozen worker (SIGSTOP) is fenced off."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator

import asyncpg
import pytest

from tests.api import create_conversation, start_thread
from tests.harness import Actor, Loop, ServerThread
from tests.test_runs_support import (
    RUN_CANCEL,
    create_run,
    on,
    read_run,
    runs_server,
    settle,
    stream_events,
    wait_for,
    wait_for_chunks,
)
from threadline.ids import Kind, decode_id

WORDS = " ".join(f"word{i}" for i in range(40))
REPLY = f"echo: {WORDS}"
# The server's run_stale_seconds: a run without a heartbeat for longer counts as abandoned for runCancel.
STALE_SECONDS = 2.0
STREAM_TYPES = ("message.delta", "message.done", "error")


class WorkerProcess:
    """`threadline worker` in a subprocess, on the test database and the module's queue (`args`: more of its
    command line, e.g. `--jobs enrichment`)."""

    def __init__(self, dsn: str, queue: str, *args: str, **env: str) -> None:
        environment = {
            **os.environ,
            "DATABASE_URL": dsn,
            "THREADLINE_MIGRATE_ON_START": "0",
            "THREADLINE_RUN_QUEUE": queue,
            "THREADLINE_RUN_HEARTBEAT_SECONDS": "0.2",
            "THREADLINE_RUN_STALE_SECONDS": "1",
            "THREADLINE_RUN_RECOVERY_SECONDS": "0.2",
            "THREADLINE_ECHO_DELAY_SECONDS": "0.04",
            **env,
        }
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "threadline.cli", "worker", "--concurrency", "2", *args],
            env=environment,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.out: list[str] = []
        self.err: list[str] = []
        for stream, lines in ((self.proc.stdout, self.out), (self.proc.stderr, self.err)):
            threading.Thread(target=self._read, args=(stream, lines), daemon=True).start()
        self.wait_for_line(self.out, "threadline worker ")

    @staticmethod
    def _read(stream: object, lines: list[str]) -> None:
        for line in stream:  # type: ignore[attr-defined]
            lines.append(line)

    def wait_for_line(self, lines: list[str], text: str, timeout: float = 30.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(lines):
                if text in line:
                    return line
            if self.proc.poll() is not None and not any(text in line for line in lines):
                raise AssertionError(f"worker exited: {''.join(self.out + self.err)}")
            time.sleep(0.05)
        raise AssertionError(f"no {text!r} from the worker: {''.join(self.out + self.err)}")

    def signal(self, sig: int) -> None:
        os.kill(self.proc.pid, sig)

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> str:
        """SIGTERM; returns its last line ("... stopped after N runs")."""
        if self.proc.poll() is None:
            self.signal(signal.SIGCONT)
            self.signal(signal.SIGTERM)
            self.proc.wait(20)
        return self.wait_for_line(self.out, "stopped after", timeout=5)


@pytest.fixture(scope="module")
def server(dsn: str) -> Iterator[ServerThread]:
    # No in-process workers and no recovery here: only the worker processes execute and recover runs.
    # A run counts as abandoned for runCancel after 2 s without a heartbeat.
    srv = runs_server(dsn, run_workers=0, run_recovery_seconds=0, run_stale_seconds=STALE_SECONDS)
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture
def workers(dsn: str, server: ServerThread, loop: Loop) -> Iterator[list[WorkerProcess]]:
    started: list[WorkerProcess] = []
    yield started
    for worker in started:
        if worker.proc.poll() is None:
            worker.signal(signal.SIGCONT)
            worker.signal(signal.SIGKILL)
            worker.proc.wait(10)
    settle(loop, dsn, None)


@pytest.fixture
def queue(server: ServerThread) -> str:
    return str(server.app.state.services.settings.run_queue)


@pytest.fixture
def owner(admin: Actor, server: ServerThread) -> Actor:
    return on(server, admin)


def _start(workers: list[WorkerProcess], dsn: str, queue: str, **env: str) -> WorkerProcess:
    worker = WorkerProcess(dsn, queue, **env)
    workers.append(worker)
    return worker


def _contiguous(chunks: list[dict[str, object]]) -> str:
    assert [c["index"] for c in chunks] == list(range(len(chunks)))
    return "".join(str(c["content"]) for c in chunks)


def test_a_killed_workers_run_is_expired_by_a_live_instance_and_not_run_again(
    owner: Actor, workers: list[WorkerProcess], dsn: str, queue: str, loop: Loop
) -> None:
    first = _start(workers, dsn, queue)
    cid = create_conversation(owner)
    run = create_run(owner, start_thread(owner, cid, WORDS))
    wait_for_chunks(owner, run["id"])
    first.kill()
    survivor = _start(workers, dsn, queue, THREADLINE_RUN_ON_LOST_WORKER="expire")

    expired = wait_for(owner, run["id"])
    assert expired["status"] == "EXPIRED" and expired["attempt"] == 1 and expired["expiredAt"] is not None
    assert expired["lastError"] == {
        "code": "RUN_EXPIRED",
        "message": "The worker executing the run stopped (no heartbeat for 1 s)",
    }
    content = expired["output"]["content"]
    assert content == _contiguous(expired["output"]["chunks"])
    assert REPLY.startswith(content) and len(content) < len(REPLY)
    assert [s["status"] for s in expired["steps"]] == ["EXPIRED"]
    events = stream_events(loop, dsn, cid, STREAM_TYPES)
    assert [e["type"] for e in events] == ["message.delta"] * len(expired["output"]["chunks"]) + ["error"]
    assert events[-1]["payload"]["code"] == "RUN_EXPIRED"
    assert "stopped after 0 runs" in survivor.stop()
    assert wait_for(owner, run["id"])["output"]["content"] == content
    assert owner.client.code(RUN_CANCEL, {"id": run["id"]}) == "CONFLICT"


def test_a_killed_workers_run_is_requeued_and_its_output_written_exactly_once(
    owner: Actor, workers: list[WorkerProcess], dsn: str, queue: str, loop: Loop
) -> None:
    first = _start(workers, dsn, queue)
    cid = create_conversation(owner)
    run = create_run(owner, start_thread(owner, cid, WORDS))
    partial = wait_for_chunks(owner, run["id"])["output"]
    first.kill()
    survivor = _start(workers, dsn, queue, THREADLINE_RUN_ON_LOST_WORKER="requeue")

    done = wait_for(owner, run["id"])
    assert done["status"] == "COMPLETED" and done["attempt"] == 2 and done["lastError"] is None
    assert done["output"]["id"] == partial["id"]
    assert done["output"]["content"] == _contiguous(done["output"]["chunks"]) == REPLY
    assert done["usage"]["completionTokens"] == 41
    assert [(s["attempt"], s["status"]) for s in done["steps"]] == [(1, "EXPIRED"), (2, "COMPLETED")]
    assert [s["details"] for s in done["steps"]] == [{"messageId": partial["id"]}] * 2
    events = stream_events(loop, dsn, cid, STREAM_TYPES)
    assert [e["type"] for e in events].count("message.done") == 1 and events[-1]["type"] == "message.done"
    # The second attempt restarts the stream at index 0; its deltas alone make the reply.
    restart = max(
        i for i, e in enumerate(events) if e["type"] == "message.delta" and e["payload"]["index"] == 0
    )
    assert "".join(e["payload"]["delta"] for e in events[restart:-1]) == REPLY
    count = owner.client.ok("query($c: ID!) { conversation(id: $c) { messageCount } }", {"c": cid})
    assert count["conversation"]["messageCount"] == 2
    assert "stopped after 1 runs" in survivor.stop()


def test_a_frozen_worker_that_wakes_up_after_its_run_was_requeued_writes_nothing(
    owner: Actor, workers: list[WorkerProcess], dsn: str, queue: str, loop: Loop
) -> None:
    frozen = _start(workers, dsn, queue)
    cid = create_conversation(owner)
    run = create_run(owner, start_thread(owner, cid, WORDS))
    wait_for_chunks(owner, run["id"])
    frozen.signal(signal.SIGSTOP)
    survivor = _start(workers, dsn, queue, THREADLINE_RUN_ON_LOST_WORKER="requeue")
    done = wait_for(owner, run["id"])
    assert done["status"] == "COMPLETED" and done["attempt"] == 2
    events_before = stream_events(loop, dsn, cid, STREAM_TYPES)

    frozen.signal(signal.SIGCONT)
    frozen.wait_for_line(frozen.err, str(uuid.UUID(hex=run["id"][4:])))  # it notices it lost the run
    assert "stopped after 0 runs" in frozen.stop()
    after = wait_for(owner, run["id"])
    assert after["output"]["content"] == _contiguous(after["output"]["chunks"]) == REPLY
    assert stream_events(loop, dsn, cid, STREAM_TYPES) == events_before
    assert "stopped after 1 runs" in survivor.stop()


def wait_until_heartbeats_are_stale(loop: Loop, dsn: str, run_ids: list[str], timeout: float = 30.0) -> None:
    """Polls the runs' last heartbeats until each is older than the server's threshold for a gone worker."""
    ids = [decode_id(run_id, Kind.RUN) for run_id in run_ids]

    async def stale() -> int:
        conn = await asyncpg.connect(dsn)
        try:
            count: int = await conn.fetchval(
                """SELECT count(*) FROM run WHERE id = ANY($1::uuid[])
                   AND (heartbeat_at IS NULL OR now() - heartbeat_at > make_interval(secs => $2))""",
                ids,
                STALE_SECONDS,
            )
            return count
        finally:
            await conn.close()

    deadline = time.monotonic() + timeout
    while loop.run(stale()) < len(ids):
        assert time.monotonic() < deadline, "the runs kept a fresh heartbeat after their worker was killed"
        time.sleep(0.1)


def test_cancelling_a_run_whose_worker_is_gone_is_forced(
    owner: Actor, workers: list[WorkerProcess], dsn: str, queue: str, loop: Loop
) -> None:
    worker = _start(workers, dsn, queue)
    cid = create_conversation(owner)
    first, second = (create_run(owner, start_thread(owner, cid, WORDS)) for _ in range(2))
    for run in (first, second):
        wait_for_chunks(owner, run["id"])
    worker.kill()
    # Its last heartbeat is fresh: the cancel is a request to the (dead) worker.
    assert owner.client.ok(RUN_CANCEL, {"id": first["id"]})["runCancel"]["status"] == "CANCELLING"
    wait_until_heartbeats_are_stale(loop, dsn, [first["id"], second["id"]])
    for run in (first, second):  # CANCELLING -> CANCELLED and IN_PROGRESS -> CANCELLED, both forced
        cancelled = owner.client.ok(RUN_CANCEL, {"id": run["id"]})["runCancel"]
        assert cancelled["status"] == "CANCELLED" and cancelled["cancelledAt"] is not None
        output = cancelled["output"]
        content = output["content"]
        assert content == _contiguous(output["chunks"]) and REPLY.startswith(content)
        usage = {"promptTokens": 4 + 3 + 68, "completionTokens": len(content.split())}
        assert cancelled["usage"] == output["usage"] == {**usage, "totalTokens": sum(usage.values())}
        assert [s["status"] for s in cancelled["steps"]] == ["CANCELLED"]
    events = stream_events(loop, dsn, cid, STREAM_TYPES)
    assert [e["type"] for e in events].count("message.done") == 2
    assert {e["payload"]["runId"] for e in events if e["type"] == "message.done"} == {
        first["id"],
        second["id"],
    }


def test_a_worker_stopped_with_sigterm_releases_its_runs_at_once(
    owner: Actor, workers: list[WorkerProcess], dsn: str, queue: str, loop: Loop
) -> None:
    worker = _start(workers, dsn, queue, THREADLINE_RUN_ON_LOST_WORKER="expire")
    cid = create_conversation(owner)
    run = create_run(owner, start_thread(owner, cid, WORDS))
    wait_for_chunks(owner, run["id"])
    assert "stopped after 0 runs" in worker.stop()
    released = read_run(owner, run["id"])  # released before the process exited: no heartbeat had to go stale
    assert released["status"] == "EXPIRED"
    assert released["lastError"] == {"code": "RUN_EXPIRED", "message": "The worker executing the run stopped"}
    assert REPLY.startswith(released["output"]["content"])
