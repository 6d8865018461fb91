"""Titles and summaries through an OpenAI-compatible provider (a fake on 127.0.0.1): a failing provider leaves a
FAILED job with its error, announced live, that `conversationEnrichmentRetry` runs again; a huge answer is read
only up to its bound; a provider that hangs is a TIMEOUT. The session server's enrichment worker is paused for
this module, so only this module's server (which knows the fake) takes the jobs."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.harness import Actor, ServerThread
from tests.test_enrichment import (
    EVENTS,
    RETRY,
    UPDATE,
    exchange,
    jobs,
    new_conversation,
    pause_enrichment,
    settled,
)
from tests.test_runs_support import FakeOpenAI, fake_openai, on, runs_server
from tests.ws import WsClient


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeOpenAI]:
    yield from fake_openai()


@pytest.fixture(scope="module")
def enriching(dsn: str, fake: FakeOpenAI, server: ServerThread) -> Iterator[ServerThread]:
    paused = pause_enrichment(server)
    next(paused)
    own = runs_server(
        dsn,
        openai_base_url=fake.base_url,
        openai_api_key="sk-test",
        openai_models=FakeOpenAI.MODELS,
        openai_default_model="fake-ok",
        enrichment_workers=3,
        enrichment_summaries="provider",
        enrichment_max_attempts=2,
        enrichment_timeout_seconds=6.0,
    )
    own.start()
    yield own
    own.stop()
    next(paused, None)


@pytest.fixture
def owner(admin: Actor, enriching: ServerThread) -> Actor:
    return on(enriching, admin)


def test_a_failing_provider_fails_the_job_visibly_and_a_retry_runs_it_again(
    owner: Actor, enriching: ServerThread, fake: FakeOpenAI
) -> None:
    conversation = new_conversation(owner, aiProvider="openai", model="fake-500")
    client = WsClient(enriching.ws_url, owner.api_key)
    try:
        client.subscribe(EVENTS, {"c": conversation})
        time.sleep(0.3)
        exchange(owner, conversation, "Why does the cache miss?", "Cold start.")
        failed = settled(owner, conversation, ("TITLE", "SUMMARY"))
        title = jobs(failed)["TITLE"]
        assert (title["status"], title["attempts"], title["lastError"]["code"]) == (
            "FAILED",
            2,
            "PROVIDER_ERROR",
        )
        assert title["lastError"]["message"].startswith("The provider answered HTTP 500")
        assert (failed["title"], failed["titleSource"], failed["summary"]) == (
            "New conversation",
            "DEFAULT",
            None,
        )
        assert len(fake.requests_for("fake-500")) == 4  # two attempts each for the title and the summary

        seen: list[tuple[str, str]] = []
        while ("TITLE", "FAILED") not in seen:
            event = client.next_event(timeout=30)["conversationEvents"]
            if event["type"] == "enrichment.job" and event["kind"] == "TITLE":
                seen.append((event["kind"], event["status"]))
        # The first failure queues it again (with its error shown); the second is final.
        assert seen == [("TITLE", "RUNNING"), ("TITLE", "QUEUED"), ("TITLE", "RUNNING"), ("TITLE", "FAILED")]

        owner.client.ok(UPDATE, {"id": conversation, "i": {"model": "fake-ok"}})
        retried = owner.client.ok(RETRY, {"c": conversation, "k": "TITLE"})["conversationEnrichmentRetry"]
        assert retried == {"kind": "TITLE", "status": "QUEUED", "attempts": 0}
        done = settled(owner, conversation, ("TITLE",))
        assert (done["title"], done["titleSource"]) == ("Hello there!", "GENERATED")
        assert (jobs(done)["TITLE"]["generator"], jobs(done)["TITLE"]["lastError"]) == ("openai", None)
        sent = fake.requests_for("fake-ok")[-1]["messages"]
        assert sent[0]["role"] == "system" and "title" in sent[0]["content"]
        assert sent[1] == {
            "role": "user",
            "content": "User: Why does the cache miss?\n\nAssistant: Cold start.",
        }
    finally:
        client.close()


def test_a_huge_answer_is_read_only_up_to_its_bound_and_a_hanging_provider_times_out(
    owner: Actor, fake: FakeOpenAI
) -> None:
    huge = new_conversation(owner, aiProvider="openai", model="fake-slow")
    exchange(owner, huge, "Count for me", "1 2 3")
    done = settled(owner, huge, ("TITLE",))
    # fake-slow streams "w0 w1 ... w99" over 5 s; the title job stops reading at 4 x 80 characters (about w81)
    # and keeps the words that fit in 80.
    assert done["title"] == " ".join(f"w{i}" for i in range(22))
    assert jobs(done)["TITLE"]["generator"] == "openai"

    hanging = new_conversation(owner, aiProvider="openai", model="fake-hang")
    exchange(owner, hanging, "Anyone there?", "Maybe.")
    failed = settled(owner, hanging, ("TITLE",))
    title = jobs(failed)["TITLE"]
    assert (title["status"], title["lastError"]["code"]) == ("FAILED", "TIMEOUT")
    assert failed["title"] == "New conversation"
    fake.release.set()
    fake.release.clear()
