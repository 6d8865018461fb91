"""`threadline worker` runs the enrichment jobs (titles, summaries, tags) and the embedding indexer as well as runs
(issue 19): real worker processes on the test database, a fake OpenAI-compatible chat provider and a fake
`/v1/embeddings` endpoint that hold their answers until told. A worker killed with SIGKILL in the middle of its jobs
and its embedding batch leaves them to the next worker, which completes each exactly once (one COMPLETED per job,
attempts 2, each message's vectors stored once); SIGTERM hands the work in flight back at once, the attempt not
counted; `--jobs` chooses what a worker does. The session server's enrichment worker is paused for this module and
it has no indexer (embeddings off), so only the worker processes take the jobs and the batches.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from typing import Any

import asyncpg
import pytest

from tests.embeddings_fake import FakeEmbeddings, running
from tests.harness import Actor, Loop, ServerThread, unique
from tests.test_enrichment import RETRY, exchange, jobs, new_conversation, pause_enrichment, read, settled
from tests.test_runs_recovery import WorkerProcess
from tests.test_runs_support import FakeOpenAI
from threadline.ids import Kind, decode_id

HELD = "fake-held"  # the fake provider's model that answers like fake-ok once the gate opens


class GatedOpenAI(FakeOpenAI):
    """FakeOpenAI with one more model, HELD: it waits until `gate` is set, then streams "Hello there!"."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()

    def answer(self, handler: BaseHTTPRequestHandler, model: str) -> None:
        if model == HELD:
            self.gate.wait(60)
            model = "fake-ok"
        super().answer(handler, model)


@pytest.fixture(scope="module")
def paused(server: ServerThread) -> Iterator[None]:
    yield from pause_enrichment(server)


@pytest.fixture
def chat() -> Iterator[GatedOpenAI]:
    fake = GatedOpenAI()
    fake.start()
    yield fake
    fake.stop()  # sets `release`; the gate is opened by the test (or times out)
    fake.gate.set()


@pytest.fixture
def vectors() -> Iterator[FakeEmbeddings]:
    yield from running(64)


def worker(
    chat: GatedOpenAI, vectors: FakeEmbeddings, dsn: str, *args: str, lease: str = "2", **env: str
) -> WorkerProcess:
    """`threadline worker` taking enrichment jobs (titles and summaries through HELD) and embedding batches."""
    settings = {
        "THREADLINE_RUN_WORKERS": "1",
        "THREADLINE_OPENAI_BASE_URL": chat.base_url,
        "THREADLINE_OPENAI_API_KEY": "sk-test",
        "THREADLINE_OPENAI_MODELS": HELD,
        "THREADLINE_OPENAI_DEFAULT_MODEL": HELD,
        "THREADLINE_ENRICHMENT_SUMMARIES": "provider",
        "THREADLINE_ENRICHMENT_POLL_SECONDS": "0.2",
        "THREADLINE_EMBEDDINGS": "openai",
        "THREADLINE_EMBEDDINGS_URL": vectors.url,
        "THREADLINE_EMBEDDINGS_MODEL": "fake-embed",
        "THREADLINE_EMBEDDINGS_DIMENSIONS": "64",
        "THREADLINE_EMBEDDINGS_API_KEY": "sk-fake",
        "THREADLINE_EMBEDDINGS_SETTLE_SECONDS": "0",
        "THREADLINE_EMBEDDINGS_POLL_SECONDS": "0.1",
        "THREADLINE_EMBEDDINGS_LEASE_SECONDS": "2",
        "THREADLINE_TIERS_INTERVAL_SECONDS": "0",
        **env,
    }
    return WorkerProcess(
        dsn, unique("q"), "--enrichment-concurrency", "3", "--enrichment-lease", lease, *args, **settings
    )


def fetch(loop: Loop, dsn: str, sql: str, *params: Any) -> list[asyncpg.Record]:
    async def run() -> list[asyncpg.Record]:
        conn = await asyncpg.connect(dsn)
        try:
            return await conn.fetch(sql, *params)
        finally:
            await conn.close()

    return loop.run(run())


def completions(loop: Loop, dsn: str, conversation: str) -> list[tuple[str, str]]:
    """The enrichment job events the conversation's subscribers were sent (its event log), in order."""
    rows = fetch(
        loop,
        dsn,
        """SELECT payload->>'kind' AS kind, payload->>'status' AS status FROM stream_event
           WHERE conversation_id = $1 AND type = 'enrichment.job' ORDER BY id""",
        decode_id(conversation, Kind.CONVERSATION),
    )
    return [(r["kind"], r["status"]) for r in rows]


def embedding_rows(loop: Loop, dsn: str) -> list[asyncpg.Record]:
    return fetch(loop, dsn, "SELECT message_id, chunk FROM message_embedding ORDER BY message_id, chunk")


def queue_rows(loop: Loop, dsn: str) -> list[asyncpg.Record]:
    return fetch(
        loop,
        dsn,
        "SELECT message_id, worker, attempts, leased_until > now() AS leased FROM embedding_queue",
    )


def until(what: str, check: Any, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.05)


def statuses(actor: Actor, conversation: str) -> dict[str, tuple[str, int]]:
    return {kind: (job["status"], job["attempts"]) for kind, job in jobs(read(actor, conversation)).items()}


def test_a_killed_worker_leaves_its_jobs_and_batch_to_the_next_which_completes_each_once(
    paused: None, admin: Actor, chat: GatedOpenAI, vectors: FakeEmbeddings, dsn: str, loop: Loop
) -> None:
    conversation = new_conversation(admin, aiProvider="openai")
    exchange(admin, conversation, "How do I rotate API keys without downtime?", "Issue a second key first.")
    vectors.hold()
    first = worker(chat, vectors, dsn)
    try:
        # The title and the summary wait for the provider, the two messages' batch for the embeddings endpoint,
        # the tag suggestions (offline rules) are done.
        until(
            "both generations and the batch are asked for",
            lambda: len(chat.requests) == 2 and vectors.requests,
        )
        until("the tags are done", lambda: statuses(admin, conversation).get("TAGS") == ("COMPLETED", 1))
        held = statuses(admin, conversation)
        assert (held["TITLE"], held["SUMMARY"]) == (("RUNNING", 1), ("RUNNING", 1))
        leased = queue_rows(loop, dsn)
        assert len(leased) == 2 and all(f":{first.proc.pid}:" in r["worker"] and r["leased"] for r in leased)
        first.kill()
    finally:
        if first.proc.poll() is None:
            first.kill()
    assert first.proc.returncode == -signal.SIGKILL
    assert read(admin, conversation)["titleSource"] == "DEFAULT" and embedding_rows(loop, dsn) == []

    chat.gate.set()
    vectors.release()
    second = worker(chat, vectors, dsn)
    try:
        done = settled(admin, conversation, ("TITLE", "SUMMARY", "TAGS"), timeout=60)
        until("the batch is stored", lambda: not queue_rows(loop, dsn))
    finally:
        last = second.stop()
    assert second.proc.returncode == 0
    # The dead worker's two jobs, each once; its batch of two messages, once.
    assert "stopped after 0 runs, 2 enrichment jobs, 2 messages embedded" in last
    assert (done["title"], done["titleSource"], done["summary"]) == (
        "Hello there!",
        "GENERATED",
        "Hello there!",
    )
    assert {kind: (job["status"], job["attempts"], job["generator"]) for kind, job in jobs(done).items()} == {
        "TITLE": ("COMPLETED", 2, "openai"),
        "SUMMARY": ("COMPLETED", 2, "openai"),
        "TAGS": ("COMPLETED", 1, "extractive"),
    }
    events = completions(loop, dsn, conversation)
    for kind in ("TITLE", "SUMMARY", "TAGS"):
        assert events.count((kind, "COMPLETED")) == 1, events
    assert events.count(("TITLE", "RUNNING")) == 2 and events.count(("SUMMARY", "RUNNING")) == 2, events
    assert len(chat.requests_for(HELD)) == 4  # two asked by the dead worker, two by the next
    rows = embedding_rows(loop, dsn)
    assert len(rows) == 2 and len({r["message_id"] for r in rows}) == 2 and {r["chunk"] for r in rows} == {0}


def test_sigterm_hands_the_work_in_flight_back_at_once(
    paused: None, admin: Actor, chat: GatedOpenAI, vectors: FakeEmbeddings, dsn: str, loop: Loop
) -> None:
    conversation = new_conversation(admin, aiProvider="openai")
    exchange(admin, conversation, "What is a bloom filter?", "A probabilistic set.")
    vectors.hold()
    # Leases of ten minutes: the work comes back because the worker hands it back, not because a lease ran out.
    first = worker(
        chat,
        vectors,
        dsn,
        lease="600",
        THREADLINE_EMBEDDINGS_LEASE_SECONDS="600",
    )
    try:
        until(
            "both generations and the batch are asked for",
            lambda: len(chat.requests) == 2 and vectors.requests,
        )
        until("the tags are done", lambda: statuses(admin, conversation).get("TAGS") == ("COMPLETED", 1))
    finally:
        last = first.stop()
    assert first.proc.returncode == 0
    assert "stopped after 0 runs, 1 enrichment jobs, 0 messages embedded" in last
    handed_back = statuses(admin, conversation)
    assert (handed_back["TITLE"], handed_back["SUMMARY"]) == (("QUEUED", 0), ("QUEUED", 0))
    assert completions(loop, dsn, conversation)[-2:] in (
        [("TITLE", "QUEUED"), ("SUMMARY", "QUEUED")],
        [("SUMMARY", "QUEUED"), ("TITLE", "QUEUED")],
    )
    assert [r["leased"] for r in queue_rows(loop, dsn)] == [False, False]

    chat.gate.set()
    vectors.release()
    second = worker(chat, vectors, dsn)
    try:
        done = settled(admin, conversation, ("TITLE", "SUMMARY"), timeout=60)
        until("the batch is stored", lambda: not queue_rows(loop, dsn))
    finally:
        second.stop()
    assert {kind: (job["status"], job["attempts"]) for kind, job in jobs(done).items()} == {
        "TITLE": ("COMPLETED", 1),
        "SUMMARY": ("COMPLETED", 1),
        "TAGS": ("COMPLETED", 1),
    }
    assert done["title"] == "Hello there!" and len(embedding_rows(loop, dsn)) == 2


def test_jobs_chooses_what_a_worker_does(
    paused: None, admin: Actor, chat: GatedOpenAI, vectors: FakeEmbeddings, dsn: str, loop: Loop
) -> None:
    chat.gate.set()
    conversation = new_conversation(admin, aiProvider="openai")
    exchange(admin, conversation, "What is a skip list?", "A layered linked list.")

    enriching = worker(chat, vectors, dsn, "--jobs", "enrichment")
    try:
        assert "; enrichment (concurrency 3)" in enriching.wait_for_line(enriching.out, "threadline worker ")
        done = settled(admin, conversation, ("TITLE", "SUMMARY", "TAGS"), timeout=60)
    finally:
        assert "stopped after 0 runs, 3 enrichment jobs, 0 messages embedded" in enriching.stop()
    assert done["title"] == "Hello there!"
    assert [(r["attempts"], r["worker"]) for r in queue_rows(loop, dsn)] == [(0, None), (0, None)]
    assert vectors.requests == []

    admin.client.ok(RETRY, {"c": conversation, "k": "TITLE"})  # queued again: a job waiting for a worker
    indexing = worker(chat, vectors, dsn, "--jobs", "embeddings,runs")
    try:
        started = indexing.wait_for_line(indexing.out, "threadline worker ")
        assert "; runs (queue " in started and "embeddings (openai:fake-embed@64)" in started
        until("the batch is stored", lambda: not queue_rows(loop, dsn))
    finally:
        assert "stopped after 0 runs, 0 enrichment jobs, 2 messages embedded" in indexing.stop()
    assert statuses(admin, conversation)["TITLE"] == ("QUEUED", 0)
    assert len(chat.requests_for(HELD)) == 2


def refused(*args: str) -> str:
    """`threadline worker ARGS`, which must exit 2 at once (argparse): its stderr."""
    result = subprocess.run(
        [sys.executable, "-m", "threadline.cli", "worker", *args], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2, result
    return result.stderr


def test_an_unknown_job_or_a_bad_number_is_refused_before_anything_starts() -> None:
    assert "choose one or more of runs, enrichment, embeddings" in refused("--jobs", "runs,mining")
    assert "must be 0 or more" in refused("--enrichment-concurrency", "-1")
    assert "must be more than 0 seconds" in refused("--enrichment-lease", "nan")
    assert "must be more than 0 seconds" in refused("--enrichment-lease", "0")
