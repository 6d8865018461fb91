"""Titles, summaries and tag suggestions follow a message whose text is masked in place (`userAnonymise`, and
`threadline pii backfill` under a masking policy) as they follow an edit: before, the title made from a user's
message kept the email address anonymisation had just masked in the message itself, shown to every reader."""

from __future__ import annotations

import random
import string
from typing import Any

from tests.api import join, reply, start_thread
from tests.harness import Actor, Loop
from tests.test_enrichment import read, settled
from tests.test_porting_import import sql
from threadline.ids import Kind, decode_id


def test_anonymising_a_user_makes_again_the_title_and_summary_made_from_their_pii(
    admin: Actor, make_user: Any, loop: Loop, dsn: str
) -> None:
    email = "".join(random.choice(string.ascii_lowercase) for _ in range(10)) + "@example.com"
    writer = make_user(admin)
    conversation = admin.client.ok("mutation { conversationCreate(input: {}) { id } }")["conversationCreate"][
        "id"
    ]
    join(admin, writer, conversation)
    root = start_thread(writer, conversation, f"Can you mail {email} the offsite agenda? They asked twice.")
    reply(admin, root, f"Sure, I will send the agenda to {email} today.", "ASSISTANT")
    made = settled(admin, conversation, ("TITLE", "SUMMARY"))
    assert email in made["title"] and email in made["summary"]

    admin.client.ok("mutation($u: ID!) { userAnonymise(userId: $u) { userId } }", {"u": writer.user_id})

    # At once: nothing made from their words is left (their message is masked; the assistant's answer, not theirs,
    # stays as it is, so the summary made again may quote it).
    now = read(admin, conversation)
    assert (now["title"], now["titleSource"], now["summary"]) == ("New conversation", "DEFAULT", None)
    again = settled(admin, conversation, ("TITLE", "SUMMARY"))
    assert again["title"] == "Can you mail [EMAIL] the offsite agenda?"
    assert email not in again["title"]


def test_a_delete_forgets_the_jobs_last_error_that_may_quote_the_deleted_words(
    admin: Actor, loop: Loop, dsn: str
) -> None:
    """A provider's error text may quote the prompt; `enrichmentJobs.lastError` showed it after the message it
    quoted was deleted."""
    marker = "zq" + "".join(random.choice(string.ascii_lowercase) for _ in range(10))
    conversation = admin.client.ok("mutation { conversationCreate(input: {}) { id } }")["conversationCreate"][
        "id"
    ]
    root = start_thread(admin, conversation, f"Tell me about {marker} please, in detail.")
    reply(admin, root, "Here is what I know.", "ASSISTANT")
    settled(admin, conversation, ("TITLE", "SUMMARY"))
    # As a failed attempt leaves it (enrich.jobs): the provider's message, quoting the prompt.
    sql(
        loop,
        dsn,
        """UPDATE enrichment_job SET last_error_code = 'PROVIDER_ERROR', last_error_message = $2
           WHERE conversation_id = $1""",
        decode_id(conversation, Kind.CONVERSATION),
        f"the model refused: 'Tell me about {marker} please'",
    )
    assert all(marker in j["lastError"]["message"] for j in read(admin, conversation)["enrichmentJobs"])
    admin.client.ok("mutation($id: ID!) { messageDelete(id: $id) { id } }", {"id": root})
    errors = [j["lastError"] for j in read(admin, conversation)["enrichmentJobs"]]
    assert not any(e is not None and marker in e["message"] for e in errors), errors
