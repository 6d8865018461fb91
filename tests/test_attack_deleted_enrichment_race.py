"""A message deleted while its conversation's summary and tag jobs are queued leaves nothing in them, even when a
worker claims a job between the delete's trigger and its commit: before, the trigger left QUEUED jobs alone, so a
worker could claim one in that window, read the message as it was, and store its words as tag suggestions and a
summary for good (nothing queued the job again after the commit)."""

from __future__ import annotations

import random
import string
import threading
import uuid
from typing import Any

import asyncpg

from tests.api import create_conversation, reply, start_thread
from tests.harness import Actor, Loop, ServerThread
from tests.test_enrichment import pause_enrichment, settled
from threadline.db import Database
from threadline.enrich import jobs
from threadline.enrich import repository as enrichment
from threadline.enrich.yielding import Yielding

DELETE = "mutation($id: ID!) { messageDelete(id: $id) { id } }"


def test_a_job_claimed_while_a_delete_commits_does_not_keep_the_deleted_words(
    server: ServerThread, admin: Actor, loop: Loop, dsn: str
) -> None:
    secret = "zq" + "".join(random.choice(string.ascii_lowercase) for _ in range(8)) + "xq"
    paused = pause_enrichment(server)
    next(paused)
    try:
        conversation = create_conversation(admin, "notes")
        root = start_thread(admin, conversation, f"{secret} {secret} {secret}: the {secret} plan.")
        reply(admin, root, "Noted.", "ASSISTANT")

        # The delete is held after its tombstone (its trigger has fired) and before its commit: its thread's row is
        # locked here.
        holder: asyncpg.Connection = loop.run(asyncpg.connect(dsn))
        held = holder.transaction()
        loop.run(held.start())
        loop.run(holder.execute("SELECT 1 FROM thread WHERE id = $1 FOR UPDATE", uuid.UUID(root[4:])))
        answers: list[Any] = []
        deleting = threading.Thread(target=lambda: answers.append(admin.client.execute(DELETE, {"id": root})))
        deleting.start()

        async def delete_waits() -> None:
            while not await holder.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE pg_backend_pid() = ANY (pg_blocking_pids(pid))"
            ):
                await holder.execute("SELECT pg_sleep(0.02)")

        loop.run(delete_waits())

        # Meanwhile a worker takes whatever job it may take and runs it.
        async def work() -> list[str]:
            db = await Database.connect(dsn, 1, 2)
            ran = []
            try:
                context = jobs.JobContext(Yielding(db), server.app.state.services.settings, {})
                while (job := await enrichment.claim_next(context.db, "attacker", 60.0)) is not None:
                    ran.append(f"{job['kind']}: {await jobs.execute(context, job)}")
            finally:
                await db.close()
            return ran

        loop.run(work())
        loop.run(held.rollback())
        loop.run(holder.close())
        deleting.join()
        assert answers == [{"data": {"messageDelete": {"id": root}}}]
    finally:
        next(paused, None)

    done = settled(admin, conversation, ("SUMMARY", "TAGS"))
    assert secret not in str(done["suggestedTags"]) and secret not in str(done["summary"])
    assert (done["summary"], done["suggestedTags"]) == ("Noted.", [])
