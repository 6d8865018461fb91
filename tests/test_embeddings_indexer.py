"""The embedding indexer against an OpenAI-compatible endpoint (a fake one, tests/embeddings_fake.py): the request
it sends, and a `threadline worker` killed (SIGKILL) in the middle of a batch whose batch another indexer takes
over once the lease runs out, so every message ends up embedded exactly once.

No other embedding server runs during these tests: the queue is shared by every indexer of the database.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import asyncpg
import pytest

from tests.api import create_conversation, start_thread
from tests.embeddings_fake import REFUSED, FakeEmbeddings, running
from tests.harness import Actor, Loop, ServerThread, create_admin, test_settings

SEARCH = """query($q: String!) { search(input: {query: $q, mode: SEMANTIC}, first: 50) {
  nodes { message { id } matchedBy } } }"""
INDEX = "{ embeddingIndex { model dimensions indexedMessages pending inProgress failed } }"
TOPICS = (
    "How do I repair a broken automobile on a budget",
    "Which physician treats an ailing puppy",
    "Purchase an inexpensive laptop for school",
    "Quick recipe for a vegetable meal",
    "Cheap hotel near the beach for the holiday",
)
PARAPHRASES = (
    "fix damaged car inexpensive",
    "doctor sick dog",
    "buy cheap computer college",
    "fast instructions veggie dish",
    "budget inn seaside vacation",
)


@pytest.fixture
def fake() -> Iterator[FakeEmbeddings]:
    yield from running(64)


def queue_rows(loop: Loop, dsn: str) -> list[asyncpg.Record]:
    async def read() -> list[asyncpg.Record]:
        conn = await asyncpg.connect(dsn)
        try:
            return await conn.fetch("SELECT message_id, worker, leased_until, attempts FROM embedding_queue")
        finally:
            await conn.close()

    return loop.run(read())


def vector_rows(loop: Loop, dsn: str) -> list[asyncpg.Record]:
    async def read() -> list[asyncpg.Record]:
        conn = await asyncpg.connect(dsn)
        try:
            return await conn.fetch(
                "SELECT message_id, chunk, vector_dims(embedding) AS dims FROM message_embedding"
            )
        finally:
            await conn.close()

    return loop.run(read())


def wait_indexed(admin: Actor) -> dict[str, int]:
    deadline = time.monotonic() + 60
    while True:
        status = admin.client.ok(INDEX)["embeddingIndex"]
        if status["pending"] == 0 and status["inProgress"] == 0:
            return dict(status)
        assert time.monotonic() < deadline, f"the indexer did not finish: {status}"
        time.sleep(0.1)


def test_a_killed_indexer_leaves_its_batch_to_the_next_one(
    fake: FakeEmbeddings, admin: Actor, dsn: str, loop: Loop
) -> None:
    conversation = create_conversation(admin, "Many topics")
    written = [start_thread(admin, conversation, text) for text in TOPICS]
    fake.hold()  # the first indexer's request will hang: it dies in the middle of its batch
    env = {
        **os.environ,
        "DATABASE_URL": dsn,
        "THREADLINE_MIGRATE_ON_START": "false",
        "THREADLINE_RUN_WORKERS": "0",
        "THREADLINE_EMBEDDINGS": "openai",
        "THREADLINE_EMBEDDINGS_URL": fake.url,
        "THREADLINE_EMBEDDINGS_MODEL": "fake-embed",
        "THREADLINE_EMBEDDINGS_DIMENSIONS": "64",
        "THREADLINE_EMBEDDINGS_API_KEY": "sk-fake",
        "THREADLINE_EMBEDDINGS_LEASE_SECONDS": "2",
        "THREADLINE_EMBEDDINGS_SETTLE_SECONDS": "0",
        "THREADLINE_EMBEDDINGS_POLL_SECONDS": "0.1",
        "THREADLINE_EMBEDDINGS_BATCH": "3",
    }
    worker = subprocess.Popen(
        [sys.executable, "-m", "threadline.cli", "worker", "--concurrency", "1"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while not fake.requests:
            assert worker.poll() is None, "the worker exited"
            assert time.monotonic() < deadline, "the worker never asked for embeddings"
            time.sleep(0.05)
        leased = [r for r in queue_rows(loop, dsn) if r["worker"] is not None]
        assert len(leased) == 3 and all(f":{worker.pid}:" in r["worker"] for r in leased)
        assert fake.requests[0]["model"] == "fake-embed" and fake.requests[0]["dimensions"] == 64
        assert fake.authorizations[0] == "Bearer sk-fake"
        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=20)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait(timeout=20)
    assert vector_rows(loop, dsn) == []  # it died before storing anything
    fake.release()

    settings = test_settings(
        dsn,
        migrate_on_start=False,
        embeddings="openai",
        embeddings_url=fake.url,
        embeddings_model="fake-embed",
        embeddings_dimensions=64,
        embeddings_api_key="sk-fake",
        embeddings_settle_seconds=0.0,
        embeddings_poll_seconds=0.1,
        embeddings_lease_seconds=2.0,
    )
    successor = ServerThread(settings)
    successor.start()
    try:
        heir = create_admin(loop, dsn, successor.url)  # any admin reads the progress of their own tenant
        heir.client.close()
        original = Actor(
            admin.tenant_id, admin.user_id, admin.api_key, type(admin.client)(successor.url, admin.api_key)
        )
        try:
            status = wait_indexed(original)
            assert status["model"] == "openai:fake-embed@64"
            assert (status["dimensions"], status["indexedMessages"], status["failed"]) == (64, 5, 0)
            rows = vector_rows(loop, dsn)
            assert sorted((r["chunk"], r["dims"]) for r in rows) == [(0, 64)] * 5  # each once
            assert queue_rows(loop, dsn) == []
            for text, paraphrase, message in zip(TOPICS, PARAPHRASES, written, strict=True):
                nodes = original.client.ok(SEARCH, {"q": paraphrase})["search"]["nodes"]
                assert nodes[0]["message"]["id"] == message, (text, paraphrase)
        finally:
            original.client.close()
    finally:
        successor.stop()


def test_an_endpoint_that_fails_is_retried_and_search_says_unavailable(
    admin: Actor, dsn: str, loop: Loop
) -> None:
    settings = test_settings(
        dsn,
        migrate_on_start=False,
        embeddings="openai",
        embeddings_url="http://127.0.0.1:9/v1",  # nothing listens on the discard port
        embeddings_dimensions=64,
        embeddings_settle_seconds=0.0,
        embeddings_poll_seconds=0.1,
        embeddings_timeout_seconds=2.0,
    )
    server = ServerThread(settings)
    server.start()
    try:
        conversation = create_conversation(admin, "Unreachable")
        start_thread(admin, conversation, TOPICS[0])
        client = type(admin.client)(server.url, admin.api_key)
        try:
            deadline = time.monotonic() + 30
            while not any(r["attempts"] > 0 for r in queue_rows(loop, dsn)):
                assert time.monotonic() < deadline, "the indexer never tried"
                time.sleep(0.1)
            (row,) = queue_rows(loop, dsn)
            assert row["attempts"] == 1 and row["leased_until"] is not None  # waits before the next try
            assert vector_rows(loop, dsn) == []
            response = client.http.post(
                "/graphql", json={"query": SEARCH, "variables": {"q": PARAPHRASES[0]}}
            )
            assert response.status_code == 503 and response.headers["retry-after"]
            (error,) = response.json()["errors"]
            assert (error["extensions"]["code"], error["extensions"]["retryAfter"]) == ("UNAVAILABLE", 5)
            assert (
                error["message"]
                == "Semantic search is unavailable: embeddings endpoint unreachable: ConnectError"
            )
        finally:
            client.close()
    finally:
        server.stop()


def test_a_message_the_provider_refuses_does_not_sink_its_batch(
    fake: FakeEmbeddings, admin: Actor, dsn: str, loop: Loop
) -> None:
    settings = test_settings(
        dsn,
        migrate_on_start=False,
        embeddings="openai",
        embeddings_url=fake.url,
        embeddings_model="fake-embed",
        embeddings_dimensions=64,
        embeddings_settle_seconds=0.0,
        embeddings_poll_seconds=0.1,
        embeddings_max_attempts=2,
    )
    # Written before an indexer runs (through the session's server, which has none): claimed as one batch.
    conversation = create_conversation(admin, "Batch")
    good = [start_thread(admin, conversation, text) for text in TOPICS[:2]]
    start_thread(admin, conversation, f"{REFUSED} {TOPICS[2]}")
    server = ServerThread(settings)
    server.start()
    try:
        client = type(admin.client)(server.url, admin.api_key)
        try:
            deadline = time.monotonic() + 60
            while True:
                status = client.ok(INDEX)["embeddingIndex"]
                if status["failed"] == 1 and status["pending"] == 0:
                    break
                assert time.monotonic() < deadline, f"the refused message was not given up on: {status}"
                time.sleep(0.1)
            assert status["indexedMessages"] == 2
            assert len({r["message_id"] for r in vector_rows(loop, dsn)}) == 2
            for paraphrase, message in zip(PARAPHRASES[:2], good, strict=True):
                assert client.ok(SEARCH, {"q": paraphrase})["search"]["nodes"][0]["message"]["id"] == message
            # The batch was sent whole once, then each message alone; the refused one alone again at its 2nd attempt.
            refused = [r for r in fake.requests if any(REFUSED in t for t in r["input"])]
            assert len(refused) == 1 + 1 + 1  # the batch, alone in attempt 1, alone in attempt 2
        finally:
            client.close()
    finally:
        server.stop()
