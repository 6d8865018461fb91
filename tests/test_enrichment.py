"""Titles, summaries and tag suggestions made in the background (issue 19 item 3), through the API: a title after
the first exchange (the conversation's provider, or the offline extractive rules), never over a user's title;
suggestions from the owner's vocabulary and the content, applied only by `conversationUpdate`; summaries again
as the conversation grows; deleted content leaving the results; jobs visible, retryable and announced live."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

from tests.api import join, reply, start_thread
from tests.harness import Actor, ServerThread
from tests.ws import WsClient

CREATE = "mutation($i: ConversationCreateInput!) { conversationCreate(input: $i) { id title titleSource } }"
UPDATE = """mutation($id: ID!, $i: ConversationUpdateInput!) { conversationUpdate(id: $id, input: $i) {
  title titleSource tags suggestedTags } }"""
READ = """query($id: ID!) { conversation(id: $id) { title titleSource summary tags suggestedTags messageCount
  enrichmentJobs { kind status attempts generator waitsForMessageCount coversMessageCount
    lastError { code message } finishedAt } } }"""
RETRY = """mutation($c: ID!, $k: EnrichmentKind!) { conversationEnrichmentRetry(conversationId: $c, kind: $k) {
  kind status attempts } }"""
DELETE = "mutation($id: ID!) { messageDelete(id: $id) { id } }"
EVENTS = """subscription($c: ID!) { conversationEvents(conversationId: $c) { type conversationId
  ... on EnrichmentJobEvent { kind status } } }"""
SETTLED = {"COMPLETED", "SKIPPED", "FAILED", "WAITING"}


def pause_enrichment(server: ServerThread) -> Iterator[None]:
    """The session server's enrichment worker stopped while the caller runs (a module's own server, or a
    `threadline worker`, is then the only one taking jobs), started again after."""
    worker = server.app.state.services.enrichment
    loop = worker._task.get_loop()
    asyncio.run_coroutine_threadsafe(worker.stop(), loop).result(timeout=30)
    yield
    asyncio.run_coroutine_threadsafe(worker.start(), loop).result(timeout=30)


def new_conversation(actor: Actor, **fields: Any) -> str:
    return str(actor.client.ok(CREATE, {"i": fields})["conversationCreate"]["id"])


def read(actor: Actor, conversation_id: str) -> dict[str, Any]:
    return actor.client.ok(READ, {"id": conversation_id})["conversation"]  # type: ignore[no-any-return]


def jobs(conversation: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {job["kind"]: job for job in conversation["enrichmentJobs"]}


def settled(
    actor: Actor, conversation_id: str, kinds: tuple[str, ...], timeout: float = 30.0
) -> dict[str, Any]:
    """The conversation once each job of `kinds` has stopped (COMPLETED, SKIPPED, FAILED or WAITING)."""
    deadline = time.monotonic() + timeout
    while True:
        conversation = read(actor, conversation_id)
        found = jobs(conversation)
        if all(kind in found and found[kind]["status"] in SETTLED for kind in kinds):
            # The conversation row is read before its jobs (two statements): read again, so the fields show
            # what the settled jobs wrote.
            return read(actor, conversation_id)
        if time.monotonic() > deadline:
            raise AssertionError(f"jobs did not settle: {conversation}")
        time.sleep(0.05)


def exchange(actor: Actor, conversation_id: str, question: str, answer: str) -> tuple[str, str]:
    root = start_thread(actor, conversation_id, question)
    return root, reply(actor, root, answer, "ASSISTANT")


def test_a_title_is_extracted_from_the_first_question_when_the_conversation_has_no_provider(
    admin: Actor,
) -> None:
    conversation = new_conversation(admin)
    assert read(admin, conversation)["titleSource"] == "DEFAULT"
    root = start_thread(
        admin, conversation, "how do I rotate API keys without downtime? We have three services."
    )
    # One message is no exchange: no job yet.
    assert read(admin, conversation)["enrichmentJobs"] == []
    reply(admin, root, "Issue a second key, deploy it, then revoke the first.", "ASSISTANT")

    done = settled(admin, conversation, ("TITLE", "SUMMARY", "TAGS"))
    assert done["title"] == "How do I rotate API keys without downtime?"
    assert done["titleSource"] == "GENERATED"
    title = jobs(done)["TITLE"]
    assert (title["status"], title["generator"], title["attempts"], title["lastError"]) == (
        "COMPLETED",
        "extractive",
        1,
        None,
    )


def test_a_title_goes_through_the_conversations_provider(admin: Actor) -> None:
    conversation = new_conversation(admin, aiProvider="echo")
    root = start_thread(admin, conversation, "Which index suits a prefix search?")
    admin.client.ok("mutation($m: ID!) { runCreate(input: {messageId: $m}) { id } }", {"m": root})

    done = settled(admin, conversation, ("TITLE",))
    # echo answers with its prompt: the transcript of the first exchange; the title is its first line.
    assert done["title"] == "echo: User: Which index suits a prefix search?"
    assert (done["titleSource"], jobs(done)["TITLE"]["generator"]) == ("GENERATED", "echo")


def test_a_title_the_user_set_is_never_replaced(admin: Actor) -> None:
    given = new_conversation(admin, title="My own title")
    exchange(admin, given, "what is a bloom filter?", "A probabilistic set.")
    done = settled(admin, given, ("SUMMARY", "TAGS"))
    assert (done["title"], done["titleSource"]) == ("My own title", "USER")
    assert "TITLE" not in jobs(done)
    error = admin.client.error(RETRY, {"c": given, "k": "TITLE"})
    assert error["extensions"]["code"] == "CONFLICT"

    # Set between the question and the answer: no title job at all.
    edited_early = new_conversation(admin)
    root = start_thread(admin, edited_early, "what is a skip list?")
    admin.client.ok(UPDATE, {"id": edited_early, "i": {"title": "Skip lists"}})
    reply(admin, root, "A layered linked list.", "ASSISTANT")
    done = settled(admin, edited_early, ("SUMMARY", "TAGS"))
    assert (done["title"], done["titleSource"]) == ("Skip lists", "USER")
    assert "TITLE" not in jobs(done)

    # Edited after it was generated: the user's from then on, whatever happens to its messages.
    generated = new_conversation(admin)
    question, answer = exchange(admin, generated, "what is a trie?", "A prefix tree.")
    assert settled(admin, generated, ("TITLE",))["title"] == "What is a trie?"
    updated = admin.client.ok(UPDATE, {"id": generated, "i": {"title": "Tries"}})["conversationUpdate"]
    assert (updated["title"], updated["titleSource"]) == ("Tries", "USER")
    admin.client.ok(DELETE, {"id": answer})
    reply(admin, question, "A tree keyed by prefixes.", "ASSISTANT")
    assert admin.client.error(RETRY, {"c": generated, "k": "TITLE"})["extensions"]["code"] == "CONFLICT"
    done = settled(admin, generated, ("TITLE", "SUMMARY", "TAGS"))
    assert (done["title"], done["titleSource"]) == ("Tries", "USER")
    assert jobs(done)["TITLE"]["status"] in ("COMPLETED", "SKIPPED")


def test_deleting_a_message_a_generated_title_came_from_makes_it_again_without_it(admin: Actor) -> None:
    conversation = new_conversation(admin)
    question, _ = exchange(admin, conversation, "Secret project Nightjar budget?", "It is confidential.")
    assert settled(admin, conversation, ("TITLE",))["title"] == "Secret project Nightjar budget?"
    other = start_thread(admin, conversation, "How are vacation days counted?")
    admin.client.ok(DELETE, {"id": question})
    # Back to the placeholder at once; the next exchange (a question and an answer after it) names it again.
    assert (read(admin, conversation)["title"], read(admin, conversation)["titleSource"]) == (
        "New conversation",
        "DEFAULT",
    )
    waiting = settled(admin, conversation, ("TITLE",))
    assert (waiting["title"], jobs(waiting)["TITLE"]["status"]) == ("New conversation", "WAITING")
    reply(admin, other, "Per calendar year.", "ASSISTANT")
    deadline = time.monotonic() + 30
    while True:
        done = settled(admin, conversation, ("TITLE", "SUMMARY", "TAGS"))
        if done["title"] != "New conversation":
            break
        assert time.monotonic() < deadline, done
        time.sleep(0.05)
    assert (done["title"], done["titleSource"]) == ("How are vacation days counted?", "GENERATED")
    assert "Nightjar" not in (done["summary"] or "")
    assert not any("nightjar" in tag for tag in done["suggestedTags"])


def test_hostile_answers_and_questions_give_bounded_titles_without_control_characters(admin: Actor) -> None:
    # Through echo, whose answer is its whole prompt: huge, with escapes, bidi overrides and bells.
    question = "\x1b[31mRed\u202e alert\x07 now\x7f " + "word " * 20_000 + "\nsecond line"
    conversation = new_conversation(admin, aiProvider="echo")
    exchange(admin, conversation, question, "\x1b]0;evil\x07 ok")
    done = settled(admin, conversation, ("TITLE", "SUMMARY"))
    title = done["title"]
    assert title.startswith("echo: User: Red alert now word word")
    assert len(title) <= 80
    assert not any(ord(ch) < 32 or ch in "\u202e\x7f" for ch in title)
    summary = done["summary"]
    assert summary is not None and len(summary) <= 1000
    assert not any((ord(ch) < 32 and ch != "\n") or ch == "\u202e" for ch in summary)

    # Extractive, from a question that is nothing but a long run of one word.
    long = new_conversation(admin)
    exchange(admin, long, "x" * 50_000, "y")
    done = settled(admin, long, ("TITLE",))
    assert done["title"] == "X" + "x" * 79, done


def test_suggested_tags_come_from_the_owners_vocabulary_and_the_content_and_wait_for_the_user(
    admin: Actor, make_tenant: Any
) -> None:
    new_conversation(admin, title="older", tags=["postgres", "billing", "replication-lag"])
    stranger = make_tenant()
    new_conversation(stranger, title="theirs", tags=["kubernetes"])
    conversation = new_conversation(admin)
    exchange(
        admin,
        conversation,
        "Our postgres replica shows replication lag after failover. Is kubernetes involved?",
        "Check the replication slots on postgres; lag grows when a slot is stuck. Replication resumes after.",
    )
    done = settled(admin, conversation, ("TAGS",))
    # The owner's tags the content names first (most mentioned first), then the content's own keywords.
    assert done["suggestedTags"] == ["postgres", "replication-lag", "slot"]
    assert done["tags"] == []
    applied = admin.client.ok(UPDATE, {"id": conversation, "i": {"tags": ["postgres"]}})["conversationUpdate"]
    assert (applied["tags"], applied["suggestedTags"]) == (["postgres"], ["replication-lag", "slot"])


def test_the_summary_is_made_again_when_the_conversation_grows_and_forgets_deleted_messages(
    admin: Actor,
) -> None:
    conversation = new_conversation(admin)
    root, _ = exchange(admin, conversation, "How should we shard the events table?", "Shard by tenant id.")
    first = settled(admin, conversation, ("SUMMARY",))
    assert first["summary"] == "How should we shard the events table? Shard by tenant id."
    assert jobs(first)["SUMMARY"]["coversMessageCount"] == 2
    assert jobs(first)["SUMMARY"]["waitsForMessageCount"] == 22

    parent = root
    secret = ""
    for i in range(20):
        content = "ok, thanks" if i % 2 else "sure"  # nothing to summarise
        if i == 3:
            content = "The vault password is hunter2, keep the vault shut."
        parent = reply(admin, parent, content, "USER" if i % 2 else "ASSISTANT")
        if i == 3:
            secret = parent
    deadline = time.monotonic() + 30
    while True:
        grown = settled(admin, conversation, ("SUMMARY",))
        if jobs(grown)["SUMMARY"]["coversMessageCount"] == 22:
            break
        assert time.monotonic() < deadline, grown
        time.sleep(0.05)
    assert jobs(grown)["SUMMARY"]["waitsForMessageCount"] == 42
    assert "vault" in grown["summary"]

    admin.client.ok(DELETE, {"id": secret})
    # Dropped at once with the message, then made again from what is left.
    assert "vault" not in (read(admin, conversation)["summary"] or "")
    deadline = time.monotonic() + 30
    while True:
        again = settled(admin, conversation, ("SUMMARY",))
        if again["summary"]:
            break
        assert time.monotonic() < deadline, again
        time.sleep(0.05)
    assert "vault" not in again["summary"]
    assert "hunter2" not in again["summary"]


def test_jobs_are_visible_to_readers_retryable_by_writers_and_announced_live(
    admin: Actor, make_user: Any, make_tenant: Any, ws: Any
) -> None:
    conversation = new_conversation(admin)
    viewer = make_user(admin)
    join(admin, viewer, conversation, "VIEWER")
    client: WsClient = ws(admin)
    client.subscribe(EVENTS, {"c": conversation})
    plain: WsClient = ws(admin)
    plain.subscribe(
        "subscription($c: ID!) { conversationEvents(conversationId: $c) { type } }", {"c": conversation}
    )
    time.sleep(0.3)
    exchange(admin, conversation, "How do retries work?", "With backoff.")

    seen: list[tuple[str, str]] = []
    deadline = time.monotonic() + 30
    while len([s for s in seen if s[1] == "COMPLETED"]) < 3:
        assert time.monotonic() < deadline, seen
        event = client.next_event(timeout=30)["conversationEvents"]
        if event["type"] == "enrichment.job":
            assert event["conversationId"] == conversation
            seen.append((event["kind"], event["status"]))
    for kind in ("TITLE", "SUMMARY", "TAGS"):
        assert [s for s in seen if s[0] == kind] == [(kind, "RUNNING"), (kind, "COMPLETED")]
    # Selected only: a subscription that does not name EnrichmentJobEvent hears none of them.
    plain_types: list[str] = []
    while True:  # everything it was sent, up to a second of quiet
        try:
            plain_types.append(plain.next_event(timeout=1.0)["conversationEvents"]["type"])
        except TimeoutError:
            break
    assert "thread.new" in plain_types
    assert "enrichment.job" not in plain_types

    assert [job["kind"] for job in read(viewer, conversation)["enrichmentJobs"]] == [
        "TITLE",
        "SUMMARY",
        "TAGS",
    ]
    assert (
        viewer.client.error(RETRY, {"c": conversation, "k": "SUMMARY"})["extensions"]["code"] == "FORBIDDEN"
    )
    for outsider in (make_user(admin), make_tenant()):
        assert (
            outsider.client.error(RETRY, {"c": conversation, "k": "SUMMARY"})["extensions"]["code"]
            == "NOT_FOUND"
        )

    retried = admin.client.ok(RETRY, {"c": conversation, "k": "SUMMARY"})["conversationEnrichmentRetry"]
    assert retried == {"kind": "SUMMARY", "status": "QUEUED", "attempts": 0}
    following: list[tuple[str, str]] = []
    while ("SUMMARY", "COMPLETED") not in following:
        event = client.next_event(timeout=30)["conversationEvents"]
        if event["type"] == "enrichment.job":
            following.append((event["kind"], event["status"]))
    assert following == [("SUMMARY", "QUEUED"), ("SUMMARY", "RUNNING"), ("SUMMARY", "COMPLETED")]
    # A generated title may be made again; a bad kind is refused by the schema.
    assert (
        admin.client.ok(RETRY, {"c": conversation, "k": "TITLE"})["conversationEnrichmentRetry"]["kind"]
        == "TITLE"
    )
    assert settled(admin, conversation, ("TITLE",))["titleSource"] == "GENERATED"
    bad = admin.client.raw(RETRY, {"c": conversation, "k": "EVERYTHING"})
    assert bad["errors"]


def test_under_a_masking_pii_policy_generated_text_is_stored_masked(admin: Actor) -> None:
    admin.client.ok("mutation { tenantPiiPolicySet(policy: MASK_ON_READ) }")
    conversation = new_conversation(admin)
    exchange(admin, conversation, "How do I email alice@example.com about the invoice?", "Write to her.")
    done = settled(admin, conversation, ("TITLE", "SUMMARY", "TAGS"))
    assert done["title"] == "How do I email [EMAIL] about the invoice?"
    assert "alice@example.com" not in (done["summary"] or "")
    assert "[EMAIL]" in done["summary"]


def test_erasing_a_user_takes_their_words_out_of_titles_and_summaries(admin: Actor, make_user: Any) -> None:
    member = make_user(admin)
    conversation = new_conversation(admin)
    join(admin, member, conversation, "MEMBER")
    question = start_thread(member, conversation, "Where is the Kestrel prototype stored?")
    reply(admin, question, "In the vault.", "ASSISTANT")
    done = settled(admin, conversation, ("TITLE", "SUMMARY", "TAGS"))
    assert done["title"] == "Where is the Kestrel prototype stored?"
    assert "Kestrel" in done["summary"]

    admin.client.ok("mutation($u: ID!) { userErase(userId: $u) { userId } }", {"u": member.user_id})
    erased = read(admin, conversation)
    assert (erased["title"], erased["titleSource"]) == ("New conversation", "DEFAULT")
    assert "Kestrel" not in (
        erased["summary"] or ""
    )  # dropped with the message (and maybe made again already)
    again = settled(admin, conversation, ("TITLE", "SUMMARY", "TAGS"))
    assert "Kestrel" not in again["title"]
    assert "Kestrel" not in (again["summary"] or "")
    assert not any("kestrel" in tag for tag in again["suggestedTags"])


def test_a_provider_the_deployment_did_not_set_up_is_not_called_the_title_is_extracted(admin: Actor) -> None:
    # The session's server has no OpenAI key nor a base URL of its own: `openai` is not configured there.
    conversation = new_conversation(admin, aiProvider="openai", model="gpt-4o")
    exchange(admin, conversation, "Can a trigger call a function?", "Yes, EXECUTE FUNCTION.")
    done = settled(admin, conversation, ("TITLE", "SUMMARY", "TAGS"))
    assert done["title"] == "Can a trigger call a function?"
    assert [(j["kind"], j["generator"]) for j in done["enrichmentJobs"]] == [
        ("TITLE", "extractive"),
        ("SUMMARY", "extractive"),
        ("TAGS", "extractive"),
    ]
