"""Storing a session's side of a gateway call while it streams, through the runs' output machinery.

`begin` stores the request's new messages and an empty assistant reply under the branch's leaf in one
transaction (a conversation without threads gets its first message as a new thread first). Deltas are then
written as a run writes them (`runs.output.append`: a chunk, the content, one `message.delta`), coalesced to at
most one write per THREADLINE_RUN_DELTA_INTERVAL_SECONDS, and `end` makes the reply final with its usage
(`runs.output.finish`: the conversation's token count, one `message.done`) and its tool calls as parts, or, when the model failed midway,
publishes an `error` event as a failed run does. The client's stream never waits for these writes; a streamed
call starts them once its first token is out (their transaction is not on the time to the first token).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import asyncpg

from threadline.auth.principal import Principal
from threadline.conversations.access import Access, require, require_writable
from threadline.db import Database
from threadline.errors import conflict
from threadline.events.announce import publish_error
from threadline.events.payloads import StreamError
from threadline.gateway.completion import Completion
from threadline.gateway.messages import reply_parts
from threadline.gateway.session import Session
from threadline.runs import output
from threadline.runs import output_repository as streams
from threadline.runs.output import OutputDeleted, Usage
from threadline.settings import Settings
from threadline.threads import branches
from threadline.threads import repository as threads
from threadline.threads.service import MessageDraft, add_reply, start_thread

log = logging.getLogger(__name__)


class Recorder:
    def __init__(
        self, db: Database, settings: Settings, principal: Principal, session: Session, model: str
    ) -> None:
        self.db = db
        self.settings = settings
        self.principal = principal
        self.session = session
        self.model = model
        self.reply: asyncpg.Record | None = None
        self.pending: list[str] = []
        self.deltas = 0
        self.stopped = False  # nothing more is written: the reply was deleted, or could not be stored
        self.wake = asyncio.Event()
        self.lock = asyncio.Lock()
        self.task: asyncio.Task[None] | None = None
        self.begun = asyncio.Event()  # the new messages are stored (or could not be)

    def start(self) -> None:
        """Store the new messages and begin writing deltas, in the background (once)."""
        if self.task is None:
            self.task = asyncio.create_task(self._run())

    def add(self, text: str) -> None:
        if text:
            self.pending.append(text)
            self.deltas += 1
            self.wake.set()

    async def _run(self) -> None:
        try:
            await self._begin()
        except Exception:  # the answer still reaches the client; the session just does not keep it
            log.exception("gateway: could not store the session's messages")
            self.stopped = True
            return
        finally:
            self.begun.set()
        last = -self.settings.run_delta_interval_seconds
        while True:
            await self.wake.wait()
            delay = last + self.settings.run_delta_interval_seconds - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            self.wake.clear()
            last = time.monotonic()
            async with self.lock:
                await self._write()

    async def _begin(self) -> None:
        tenant_id = self.principal.tenant_id
        conversation_id = self.session.conversation["id"]
        drafts = list(self.session.drafts)
        parent_id = self.session.leaf_id
        if parent_id is None:
            root = await start_thread(self.db, self.settings, self.principal, conversation_id, drafts.pop(0))
            parent_id = root["id"]
        async with self.db.transaction() as tx:
            # Lock order everywhere: message, then conversation, then thread.
            parent = await threads.message(tx, tenant_id, parent_id, lock=True)
            if parent is None:
                raise conflict("The branch's last message is gone")
            require_writable(await require(tx, self.principal, conversation_id, Access.WRITE))
            for draft in drafts:
                parent, _ = await add_reply(
                    tx, self.settings, tenant_id, parent, draft, self.principal.user_id
                )
            reply, _ = await add_reply(
                tx,
                self.settings,
                tenant_id,
                parent,
                MessageDraft(content="", role="ASSISTANT", model=self.model),
                None,
            )
            await streams.open_stream(tx, tenant_id, reply["id"])
            # The caller sees the answer stream on their branch, as a run's creator does (threads.branches).
            await branches.move_current(tx, tenant_id, self.principal.user_id, reply, branches.RUN)
        self.reply = reply

    async def _write(self) -> None:
        if self.reply is None or self.stopped or not self.pending:
            return
        count = len(self.pending)
        try:
            async with self.db.transaction() as tx:
                await output.append(
                    tx, self.principal.tenant_id, self.reply, "".join(self.pending[:count]), None
                )
        except OutputDeleted:
            self.stopped = True
        del self.pending[:count]

    async def end(self, completion: Completion, error: tuple[str, str] | None = None) -> None:
        """Write what is left and make the reply final; with `error`, announce the failure instead."""
        self.start()  # a call that ended before its first token still stores what was asked
        if self.task is not None:
            await self.begun.wait()  # the messages may still be being stored: let that finish
            async with self.lock:
                self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.task
        if self.reply is None or self.stopped:
            return
        reply = self.reply
        usage = _usage(completion.usage) or Usage(self.session.prompt_tokens, self.deltas)
        try:
            await self._write()
            async with self.db.transaction() as tx:
                row = await threads.message(tx, self.principal.tenant_id, reply["id"], lock=True)
                if row is None:
                    return
                stored = reply_parts(completion.first(), self.settings)
                if stored is not None:
                    await threads.set_parts(tx, self.principal.tenant_id, reply["id"], stored)
                await output.finish(
                    tx, self.principal.tenant_id, row, None, usage, announce=error is None, strict=False
                )
                if error is not None:
                    await publish_error(
                        tx,
                        self.principal.tenant_id,
                        StreamError(error[0], error[1], None, reply["id"]),
                        conversation_id=reply["conversation_id"],
                        root_id=reply["root_id"],
                    )
        except Exception:
            log.exception("gateway: could not finish the stored reply %s", reply["id"])


def _usage(reported: object) -> Usage | None:
    if not isinstance(reported, dict):
        return None
    prompt, completion = reported.get("prompt_tokens"), reported.get("completion_tokens")
    if isinstance(prompt, int) and isinstance(completion, int) and prompt >= 0 and completion >= 0:
        return Usage(prompt, completion)
    return None
