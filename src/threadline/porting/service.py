"""Import and export rules: who may, what gets reported, a transaction per batch of new conversations (one per
merged conversation), audit."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import tempfile
import uuid
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

from threadline import crypto
from threadline.audit.service import Actor, AuditAction, record
from threadline.auth.principal import Principal
from threadline.conversations import repository as conversations
from threadline.conversations.access import Access, access_level, require, require_writable
from threadline.db import Database, Transaction
from threadline.db.database import database_unavailable
from threadline.db.within import WithinTransaction
from threadline.errors import ThreadlineError, bad_input
from threadline.events.announce import deferring
from threadline.ids import Kind, encode_id
from threadline.porting import (
    bulk,
    chatgpt,
    chatgpt_nodes,
    claude,
    importer,
    jsonstream,
    librechat,
    merging,
    openwebui,
    organised,
    request_limits,
    threadline_format,
)
from threadline.porting import bulk_repository as bulk_repo
from threadline.porting import repository as repo
from threadline.porting.jsonstream import Item
from threadline.porting.model import ImportedConversation, ImportFormat, Rejected, storable
from threadline.privacy.modes import PiiPolicy
from threadline.privacy.modes import parse as pii_policy
from threadline.privacy.writing import imported_for_storage, mask_logged_events
from threadline.ratelimits import service as ratelimits
from threadline.settings import Settings


@dataclass
class ImportFailure:
    index: int  # position of the conversation in the file (0-based)
    external_id: str | None
    message: str
    offset: int | None = None  # byte offset of the conversation in the file, when read from one
    line: int | None = None
    file: str | None = None


@dataclass
class MergedConversation:
    """A conversation imported before that a re-import added messages to or changed messages of."""

    conversation_id: uuid.UUID
    external_id: str
    messages_added: int
    messages_updated: int


@dataclass
class ImportReport:
    imported: list[uuid.UUID] = field(default_factory=list)
    # Imported before and unchanged by this import: not duplicated.
    existing: list[uuid.UUID] = field(default_factory=list)
    merged: list[MergedConversation] = field(default_factory=list)
    failures: list[ImportFailure] = field(default_factory=list)
    messages: int = 0  # messages created: in new conversations and added by merges
    warnings: list[str] = field(default_factory=list)
    repeated: int = 0  # conversations that came again in the input, after a first copy (`Importer._first_of`)

    @property
    def skipped(self) -> int:
        """Conversations not written: unchanged since an earlier import, or repeated in the input."""
        return len(self.existing) + self.repeated

    @property
    def conversation_ids(self) -> list[uuid.UUID]:
        """Created, then merged, then unchanged conversations."""
        return [*self.imported, *(m.conversation_id for m in self.merged), *self.existing]

    def as_dict(self) -> dict[str, Any]:
        return {
            "imported": len(self.imported),
            "skipped": self.skipped,
            "merged": len(self.merged),
            "failed": len(self.failures),
            "messages": self.messages,
            "messagesAdded": sum(m.messages_added for m in self.merged),
            "messagesUpdated": sum(m.messages_updated for m in self.merged),
            "merges": [
                {
                    "conversationId": encode_id(Kind.CONVERSATION, m.conversation_id),
                    "externalId": m.external_id,
                    "messagesAdded": m.messages_added,
                    "messagesUpdated": m.messages_updated,
                }
                for m in self.merged
            ],
            "warnings": self.warnings,
            "failures": [f.__dict__ for f in self.failures],
        }


def read(fmt: ImportFormat, value: Any) -> list[ImportedConversation]:
    if fmt is ImportFormat.CHATGPT:
        return [chatgpt.parse(value)]
    if fmt is ImportFormat.CLAUDE:
        return [claude.parse(value)]
    if fmt is ImportFormat.LIBRECHAT:
        return [librechat.parse(value)]
    if fmt is ImportFormat.OPENWEBUI:
        return [openwebui.parse(value)]
    return threadline_format.parse(value)


# A batch of new conversations goes in one transaction (porting.bulk): up to this many conversations, or this many
# bytes of their JSON (what bounds the memory of the batches in flight: `concurrency` of them, and one filling).
BATCH_CONVERSATIONS = 50
BATCH_BYTES = 4 << 20


def items_of(data: Any) -> list[Item]:
    """The conversations of a JSON value sent through the API: an array of them, or a single one."""
    values = data if isinstance(data, list) else [data]
    return [Item(index=i, offset=None, line=None, size=0, value=v) for i, v in enumerate(values)]


@dataclass
class _Prepared:
    item: Item
    # None for a ChatGPT conversation of a file (`Importer.lazy`): planned once it is known whether it is new, so
    # that a re-import reads only the nodes that are new (chatgpt.reduced).
    plan: importer.Plan | None
    external_id: str
    # The user's earlier import of the same source item: merged into unless it was deleted.
    known: uuid.UUID | None = None
    deleted: bool = False
    no_origin: bool = False  # the earlier import was made before origins were recorded
    seen: dict[str, str] | None = None  # the earlier import's node digests (chatgpt.node_digests)
    file: str | None = None  # the file it was read from (`Importer.file` then), for failures found later


def _forgotten(digests: dict[str, str], rows: list[Any]) -> dict[str, str]:
    """Node digests to keep, those of the messages deleted here among `rows` forgotten (chatgpt_nodes.FORGOTTEN):
    a re-import may bring their text back in its bytes, but nothing of it is kept."""
    deleted = {r["import_key"] for r in rows if r["deleted"] and r["import_key"] in digests}
    if not deleted:
        return digests
    return {k: chatgpt_nodes.FORGOTTEN if k in deleted else d for k, d in digests.items()}


def _all_stored(known: dict[str, bool], seen: dict[str, str], value: Any) -> bool:
    """Whether every node the earlier import saw that was asked about is stored or has no parent (the root, whose
    message is null, is never stored): then each walk up from a new node stops at the first of them
    (`chatgpt.stored_keys_needed` would ask for nothing more)."""
    return all(stored or chatgpt.without_parent(value, key) for key, stored in known.items() if key in seen)


def _only_new(m: _Merging) -> bool:
    """Whether a grown ChatGPT conversation only has new nodes (none the earlier import saw changed)."""
    return m.only_new


@dataclass
class _Merging:
    """A changed conversation to merge: its earlier import, and that import's rows when read already (else read
    under its lock, and only the new nodes of the ChatGPT conversation planned, from the first look's digests)."""

    p: _Prepared
    conversation_id: uuid.UUID
    rows: list[Any] | None
    digests: dict[str, str] | None
    only_new: bool = False  # chatgpt.look: nodes were added, none the earlier import saw changed
    # Planned before the transaction (`Importer._plan_ahead`): the plan (or why it cannot be), and the nodes of the
    # part it was planned from (None: the whole conversation). Used under the lock only if the rows read there
    # give the same part (`Importer._lazy_plan`).
    ahead: importer.Plan | None = None
    ahead_error: str | None = None
    ahead_keys: frozenset[str] | None = None
    planned_ahead: bool = False


class Importer:
    """One import run: feed it items (from a stream or the API), then `finish()` for the report."""

    def __init__(
        self,
        db: Database,
        settings: Settings,
        principal: Principal,
        fmt: ImportFormat,
        *,
        target_conversation_id: uuid.UUID | None = None,
        concurrency: int = 1,
        on_progress: Callable[[ImportReport], None] | None = None,
        lazy: bool = False,
    ) -> None:
        self.db = db
        # Where what need not roll back with the import goes, committed at once: search words and the files of
        # oversized texts (`db` itself, also when an all-or-nothing import runs in one transaction: the words' and
        # the files' tenant-wide locks must not be held until the import commits, nor a stored blob orphaned by
        # its rollback; a file no message holds is swept like any other).
        self.outside = db
        self.settings = settings
        self.principal = principal
        self.fmt = fmt
        self.target_id = target_conversation_id
        self.report = ImportReport()
        self._concurrency = max(1, concurrency)
        self._slots = asyncio.Semaphore(self._concurrency)
        self._tasks: set[asyncio.Task[None]] = set()
        self._on_progress = on_progress
        self._targeted = 0
        self._pending: list[_Prepared] = []
        self._pending_bytes = 0
        self._organised = organised.Organised()
        # ChatGPT files: conversations are planned when inserted, a re-import only from their new nodes.
        self.lazy = lazy and fmt is ImportFormat.CHATGPT and target_conversation_id is None
        self.file: str | None = None  # the file being read (the CLI sets it), named by its failures
        self._copies: dict[str, bytes] = {}  # each conversation id of this input -> its first copy's digest
        # Writes one after the other, awaited where they are started (`_start`): on one connection, for an import
        # in one transaction (`import_data`'s all or nothing).
        self.inline = False
        # The first failure to store or merge that was the database being unavailable (an outage, a restart): not
        # the conversation's fault, so an all-or-nothing import is not refused for it (`import_data`).
        self.outage: BaseException | None = None

    async def check_access(self) -> None:
        """Import into an existing conversation needs its owner or a tenant admin (and it must be open):
        imported messages carry their own (past) dates, so a member could otherwise rewrite the history
        of someone else's conversation."""
        if self.target_id is None:
            return
        row = await require(self.db, self.principal, self.target_id, Access.MANAGE)
        require_writable(row)

    def prepare(self, item: Item) -> list[_Prepared]:
        """Parse and plan one item of the file: failures go to the report, nothing touches the database."""
        if item.error is not None:
            self._fail(item, None, item.error)
            return []
        if item.unstorable and item.text is None:
            item.value, repaired = storable(item.value)
            if repaired:
                self.report.warnings.append(
                    f"item {item.index}: {repaired} string(s) held NUL characters or lone surrogates (not text): "
                    "replaced with U+FFFD"
                )
            item.unstorable = False
        if self.lazy and item.text is not None:
            # Not decoded yet (JsonArrayReader with `defer`): at the batch's flush, unless its very bytes were
            # imported before (`_undeferred`).
            return [_Prepared(item, None, "", file=self.file)]
        if self.lazy and (external_id := chatgpt.external_id(item.value)) is not None:
            if not self._first_of(external_id, self._digest(item, None)):
                return []
            return [_Prepared(item, None, external_id, file=self.file)]
        try:
            conversations = (
                self._documents(item) if self.fmt is ImportFormat.THREADLINE else read(self.fmt, item.value)
            )
        except Rejected as exc:
            self._fail(item, None, str(exc))
            return []
        except Exception as exc:  # noqa: BLE001 - one bad conversation must not stop the others
            self._fail(item, None, f"could not be read: {type(exc).__name__}: {exc}")
            return []
        prepared = []
        for conversation in conversations:
            try:
                plan = importer.plan(conversation, self.settings)
                imported_for_storage(self.principal.pii_policy, plan.messages)  # privacy: MASK_ON_WRITE
            except Rejected as exc:
                self._fail(item, conversation.external_id, str(exc))
                continue
            except Exception as exc:  # noqa: BLE001 - one bad conversation must not stop the others
                self._fail(item, conversation.external_id, f"could not be read: {type(exc).__name__}: {exc}")
                continue
            if self.target_id is not None:
                self._targeted += 1
                if self._targeted > 1:
                    self._fail(
                        item,
                        conversation.external_id,
                        "only one conversation can be imported into an existing one",
                    )
                    continue
            if not self._first_of(
                plan.external_id,
                self._digest(item, conversation if self.fmt is ImportFormat.THREADLINE else None),
            ):
                continue
            prepared.append(_Prepared(item, plan, plan.external_id, file=self.file))
            self._organised.keep(conversation)
        return prepared

    def _documents(self, item: Item) -> list[ImportedConversation]:
        """The documents of a Threadline element, each read by itself: one a user export holds that cannot be read
        fails alone (it failed the export's others with it)."""
        read_ones = []
        for document in threadline_format.documents(item.value):
            named = document.get("conversation_id") if isinstance(document, dict) else None
            external_id = named if isinstance(named, str) else None
            try:
                read_ones.append(threadline_format.parse_document(document))
            except Rejected as exc:
                self._fail(item, external_id, str(exc))
            except Exception as exc:  # noqa: BLE001 - one bad conversation must not stop the others
                self._fail(item, external_id, f"could not be read: {type(exc).__name__}: {exc}")
        return read_ones

    def _first_of(self, external_id: str, digest: bytes) -> bool:
        """Whether this is the input's first copy of the conversation. A later copy is skipped (counted so): the
        two written into one conversation, each re-import of the input recorded the other's text as an edit
        again. An export split over several files repeats conversations whole (skipped quietly); a copy that
        differs is reported: only the first is imported."""
        first = self._copies.get(external_id)
        if first is None:
            self._copies[external_id] = digest
            return True
        self.report.repeated += 1
        if first != digest:
            self.report.warnings.append(
                f"conversation {external_id} comes again in the input, not the same as before: only its first copy "
                "is imported"
            )
        return False

    @staticmethod
    def _digest(item: Item, conversation: ImportedConversation | None) -> bytes:
        """What tells two copies of a conversation apart: the bytes of the item it was read from (a file's item
        has their fingerprint; the API's is written again), or, for a Threadline document (a user export holds
        several in one item), the conversation as read."""
        if item.fingerprint is not None and conversation is None:
            return item.fingerprint
        value = item.value if conversation is None else conversation
        try:
            encoded = orjson.dumps(value, default=str)
        except orjson.JSONEncodeError:  # what orjson cannot write (an integer past 64 bits): the slower way
            encoded = json.dumps(value, default=str, ensure_ascii=False).encode("utf-8", "surrogatepass")
        return hashlib.sha256(encoded).digest()

    def _unavailable(self, exc: BaseException) -> None:
        """Note a failure to store that was the database being unavailable (`outage`)."""
        if self.outage is None and database_unavailable(exc):
            self.outage = exc

    def _fail(self, item: Item, external_id: str | None, message: str) -> None:
        self.report.failures.append(
            ImportFailure(item.index, external_id, message, item.offset, item.line, self.file)
        )

    def _fail_prepared(self, p: _Prepared, external_id: str | None, message: str) -> None:
        """A failure found after the item was read (its insert runs later, maybe while the next file is read)."""
        item = p.item
        self.report.failures.append(
            ImportFailure(item.index, external_id, message, item.offset, item.line, p.file)
        )

    async def submit(self, prepared: list[_Prepared]) -> None:
        """Queue prepared conversations; they are inserted in batches, `concurrency` at a time."""
        self._pending.extend(prepared)
        self._pending_bytes += sum(p.item.size for p in prepared)
        await asyncio.sleep(0)  # reading is CPU work too: the batches in flight move on between items
        if len(self._pending) >= BATCH_CONVERSATIONS or self._pending_bytes >= BATCH_BYTES:
            await self._flush()

    async def _flush(self) -> None:
        batch, self._pending, self._pending_bytes = self._pending, [], 0
        batch = await self._undeferred(batch)
        if not batch:
            return
        # One look-up for the batch: conversations this user imported before are merged into, not inserted
        # again; one they deleted since is imported anew.
        known = await repo.imported_conversations(
            self.db,
            self.principal.tenant_id,
            self.principal.user_id,
            self.fmt.value,
            [p.external_id for p in batch],
        )
        fresh: list[_Prepared] = []
        merges: list[tuple[_Prepared, uuid.UUID]] = []
        for p in batch:
            earlier = known.get(p.external_id)
            if earlier is not None:
                p.known = earlier["conversation_id"]
                p.deleted = earlier["status"] == "DELETED"
                p.no_origin = earlier["no_origin"]
                p.seen = earlier["node_digests"]
                fingerprint = self._fingerprint(p)
                if not p.deleted and fingerprint is not None and earlier["fingerprint"] == fingerprint:
                    # The very bytes it was last imported or merged from: nothing to digest, compare or plan.
                    self.report.existing.append(earlier["conversation_id"])
                    p.item.value = None
                    continue
            if p.known is not None and not p.deleted:
                merges.append((p, p.known))
            elif self.target_id is not None:
                await self._start(
                    self._insert(p)
                )  # into an existing conversation: one, announced to its readers
            else:
                fresh.append(p)
        if merges:
            await self._start(self._merge_batch(merges))
        if fresh:
            await self._start(self._insert_batch(fresh))

    async def _undeferred(self, batch: list[_Prepared]) -> list[_Prepared]:
        """The batch with its items read undecoded (`prepare`) either known by their fingerprint (the very bytes
        this user imported a conversation from before: reported unchanged, never decoded; one statement for the
        batch) or decoded and prepared as usual."""
        deferred = [p for p in batch if p.item.text is not None]
        if not deferred:
            return batch
        known = await bulk_repo.sources_by_fingerprint(
            self.db,
            self.principal.tenant_id,
            self.principal.user_id,
            self.fmt.value,
            [p.item.fingerprint for p in deferred if p.item.fingerprint is not None],
        )
        ready: list[_Prepared] = []
        reading = self.file
        try:
            for p in batch:
                if p.item.text is None:
                    ready.append(p)
                    continue
                earlier = known.get(p.item.fingerprint) if p.item.fingerprint is not None else None
                if earlier is not None:
                    conversation_id, external_id = earlier
                    assert p.item.fingerprint is not None
                    if self._first_of(external_id, p.item.fingerprint):
                        self.report.existing.append(conversation_id)
                    p.item.text = None
                    continue
                # A ChatGPT conversation's messages are decoded when needed (chatgpt_nodes): a re-import of a grown
                # one decodes only its new nodes and those that place them.
                lazily = self.fmt is ImportFormat.CHATGPT and not p.item.unstorable  # else repaired whole
                value = chatgpt_nodes.read(p.item.text) if lazily else None
                if value is None:
                    jsonstream.decode(p.item)
                else:
                    p.item.value, p.item.text = value, None
                self.file = p.file  # failures name the file the item came from
                ready.extend(self.prepare(p.item))
                # Decoding is CPU work on the event loop: the batches in flight get their next statements out
                # between items, so the server works on them while this batch is decoded.
                await asyncio.sleep(0)
        finally:
            self.file = reading
        return ready

    def _fingerprint(self, p: _Prepared) -> bytes | None:
        """The fingerprint of the file's item a conversation was read from (porting.jsonstream.fingerprint), when
        it is the item's only conversation (a ChatGPT file read lazily); None otherwise (the API, or a Threadline
        user export holding several in one item)."""
        return p.item.fingerprint if self.lazy else None

    async def _start(self, work: Coroutine[Any, Any, None]) -> None:
        await self._slots.acquire()  # waits while `concurrency` writes are in flight
        if self.inline:
            await self._run(work)
            return
        task = asyncio.create_task(self._run(work))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, work: Coroutine[Any, Any, None]) -> None:
        try:
            await work
        finally:
            self._slots.release()
            if self._on_progress is not None:
                self._on_progress(self.report)

    async def _insert_batch(self, batch: list[_Prepared]) -> None:
        """New conversations (and ones whose earlier import was deleted), planned if read lazily, then written
        together (porting.bulk)."""
        ready = []
        for p in batch:
            if p.plan is not None or self._plan(p, p.item.value) is not None:
                ready.append(p)
            p.item.value = None  # planned: the decoded JSON is not needed any more (memory)
            # Planning is CPU work on the event loop: the batches in flight get their next statements out between.
            await asyncio.sleep(0)
        if ready:
            await self._write_batch(ready)

    async def _write_batch(self, batch: list[_Prepared]) -> None:
        """One transaction for the batch. If it fails, nothing of it stays, and each conversation is tried again
        alone: one that cannot be stored fails by itself, with its reason, and the others are imported."""
        tenant, user = self.principal.tenant_id, self.principal.user_id
        plans = [p.plan for p in batch if p.plan is not None]
        assert len(plans) == len(batch)
        for p, plan in zip(batch, plans, strict=True):
            plan.fingerprint = self._fingerprint(p)
        try:
            for plan in plans:
                await self._store_whole_texts(
                    plan, {i for i, c in plan.oversized.items() if c.file_id is None}
                )
            # Sealed titles (crypto/) keep their words out of the lexicon, as the live trigger does: tags only.
            sealed = crypto.sealing_titles()
            labels = [
                f"{'' if sealed else p.conversation['title']} {' '.join(p.conversation['tags'])}"
                for p in plans
            ]
            await bulk_repo.add_search_terms(self.outside, tenant, labels)
            async with self.db.transaction() as tx:
                for p, plan in zip(batch, plans, strict=True):
                    if p.deleted:
                        await repo.release_deleted_source(tx, tenant, user, plan.source, p.external_id)
                async with deferring(tx):  # events (none for a new conversation today) in one statement
                    written = await bulk.insert_new(tx, tenant, user, plans)
                for cid in written.conversation_ids:
                    if cid is not None:
                        await mask_logged_events(tx, tenant, self.principal.pii_policy, cid)  # privacy
        except Exception as exc:  # noqa: BLE001 - one bad conversation must not stop the others
            if len(batch) > 1:
                for p in batch:
                    await self._write_batch([p])
                return
            self._unavailable(exc)
            self._fail_prepared(
                batch[0], batch[0].external_id, f"could not be stored: {type(exc).__name__}: {exc}"
            )
            return
        for p, plan, cid in zip(batch, plans, written.conversation_ids, strict=True):
            if cid is None:
                await self._merge_into_earlier(p)
                continue
            self.report.imported.append(cid)
            self.report.messages += len(plan.messages)
            self.report.warnings.extend(f"{p.external_id}: {w}" for w in plan.warnings)

    async def _merge_into_earlier(self, p: _Prepared) -> None:
        """Another import of the same item by this user committed first (or it came earlier in the file): merge
        into that one instead."""
        known = await repo.imported_conversations(
            self.db, self.principal.tenant_id, self.principal.user_id, self.fmt.value, [p.external_id]
        )
        earlier = known.get(p.external_id)
        if earlier is not None:
            await self._merge(p, earlier["conversation_id"])
            return
        self._fail_prepared(p, p.external_id, "could not be stored: imported concurrently, try again")

    def _plan(self, p: _Prepared, value: Any, digests: dict[str, str] | None = None) -> importer.Plan | None:
        """Plan a conversation read lazily (the whole of it, or what `chatgpt.reduced` kept); None if refused."""
        plan, error = self._planned(value, digests)
        if plan is None:
            self._fail_prepared(p, p.external_id, error or "could not be read")
            return None
        p.plan = plan
        return plan

    def _planned(
        self, value: Any, digests: dict[str, str] | None = None
    ) -> tuple[importer.Plan | None, str | None]:
        """A ChatGPT conversation's plan, or why it cannot be imported."""
        try:
            conversation = chatgpt.parse(value, digests)  # the digests of the whole, not of the part read
            plan = importer.plan(conversation, self.settings)
            imported_for_storage(self.principal.pii_policy, plan.messages)  # privacy: MASK_ON_WRITE
        except Rejected as exc:
            return None, str(exc)
        except Exception as exc:  # noqa: BLE001 - one bad conversation must not stop the others
            return None, f"could not be read: {type(exc).__name__}: {exc}"
        return plan, None

    async def _insert(self, p: _Prepared) -> None:
        if p.known is not None and not p.deleted:
            await self._merge(p, p.known)
            return
        if p.plan is None and self._plan(p, p.item.value) is None:
            return
        assert p.plan is not None
        try:
            tenant = self.principal.tenant_id
            await self._store_whole_texts(p.plan, set(p.plan.oversized))
            async with self.db.transaction() as tx:
                if p.deleted:
                    await repo.release_deleted_source(
                        tx, tenant, self.principal.user_id, p.plan.source, p.external_id
                    )
                target = None
                if self.target_id is not None:
                    target = await require(tx, self.principal, self.target_id, Access.MANAGE, lock=True)
                async with deferring(tx):  # its events in one statement at the end: see events.publish
                    conversation_id = await importer.insert(
                        tx, tenant, self.principal.user_id, p.plan, target
                    )
                await mask_logged_events(tx, tenant, self.principal.pii_policy, conversation_id)  # privacy
            self.report.imported.append(conversation_id)
            self.report.messages += len(p.plan.messages)
            self.report.warnings.extend(f"{p.external_id}: {w}" for w in p.plan.warnings)
        except importer.AlreadyImported:
            await self._merge_into_earlier(p)
        except Exception as exc:  # noqa: BLE001 - one bad conversation must not stop the others
            self._unavailable(exc)
            self._fail_prepared(p, p.external_id, f"could not be stored: {type(exc).__name__}: {exc}")

    async def _store_whole_texts(self, plan: importer.Plan, indexes: set[int]) -> None:
        """The whole text of each oversized message to be inserted, stored as a file of the importing user
        before the conversation's transaction (a file no message comes to hold is deleted after a while)."""
        from threadline.files import service as files

        for index in sorted(indexes):
            whole = plan.oversized[index]
            data = whole.whole.encode("utf-8")
            spool = tempfile.SpooledTemporaryFile(max_size=1 << 20)
            spool.write(data)
            spool.seek(0)
            upload = files.Upload(
                whole.filename, len(data), hashlib.sha256(data).digest(), "text/plain", spool
            )
            try:
                if len(data) > self.settings.file_max_bytes:
                    raise files.TooLarge(
                        f"{len(data)} bytes, over THREADLINE_FILE_MAX_BYTES",
                        "fileMaxBytes",
                        self.settings.file_max_bytes,
                    )
                row, _ = await files.store(self.outside, self.settings, self.principal, upload)
            except files.TooLarge as exc:
                importer.keep_whole_text(plan, index, None, exc.message)
            else:
                importer.keep_whole_text(plan, index, row["id"])
            finally:
                spool.close()

    async def _merge(self, p: _Prepared, conversation_id: uuid.UUID) -> None:
        await self._merge_batch([(p, conversation_id)])

    async def _merge_batch(self, batch: list[tuple[_Prepared, uuid.UUID]]) -> None:
        """Merge newer exports into the user's earlier imports (porting.merging), if they still manage them.
        Unchanged conversations are told apart first, without a lock or a transaction (ChatGPT's from the node
        digests kept by the earlier import, without a statement); the changed ones merge in one transaction."""
        tenant = self.principal.tenant_id
        pending: list[_Merging] = []
        refreshed: dict[uuid.UUID, bytes | None] = {}  # unchanged ones: the fingerprint of the bytes read now
        # Conversations holding a message deleted here: no fingerprint of bytes holding its text is kept again.
        forgetting = {cid for p, cid in batch if chatgpt_nodes.forgets(p.seen)}
        # Most re-imported conversations did not change: their rows read in one statement, no lock.
        read_now = [cid for p, cid in batch if not (p.plan is None and p.seen is not None)]
        rows_of = await bulk_repo.merge_targets(self.db, tenant, read_now) if read_now else {}
        for p, cid in batch:
            try:
                if p.plan is None and p.seen is not None:
                    # A ChatGPT conversation whose nodes the earlier import kept digests of: a grown one is read
                    # (under its lock) once, only its new nodes planned.
                    first_look = chatgpt.look(p.item.value, p.seen)
                    if first_look.unchanged:
                        self.report.existing.append(cid)
                        refreshed[cid] = self._fingerprint(
                            p
                        )  # other bytes, same nodes: skipped sooner next time
                        continue
                    m = _Merging(p, cid, None, first_look.digests, first_look.only_new)
                    self._plan_ahead(m)
                    pending.append(m)
                    # Reading and planning are CPU work on the event loop: the batches in flight get their next
                    # statements out between conversations (the server works while this batch is planned).
                    await asyncio.sleep(0)
                    continue
                rows = rows_of[cid]
                if any(r["deleted"] for r in rows):
                    forgetting.add(cid)
                if p.plan is None and self._plan(p, p.item.value) is None:
                    continue
                assert p.plan is not None
                if merging.unchanged(p.plan, rows):
                    if p.seen is None and p.plan.node_digests is not None:
                        # Imported before digests were kept: the next re-import reads only what is new.
                        await repo.set_node_digests(
                            self.db, tenant, cid, p.plan.source, _forgotten(p.plan.node_digests, rows)
                        )
                    self.report.existing.append(cid)
                    refreshed[cid] = self._fingerprint(p)
                    continue
                known = {r["import_key"] for r in rows}
                await self._store_whole_texts(
                    p.plan, {i for i in p.plan.oversized if p.plan.messages[i]["key"] not in known}
                )
                pending.append(_Merging(p, cid, rows, None))
            except merging.NotMergeable:
                self._not_mergeable(p, cid)
            except Exception as exc:  # noqa: BLE001 - one bad conversation must not stop the others
                self._unavailable(exc)
                self._fail_prepared(p, p.external_id, f"could not be merged: {type(exc).__name__}: {exc}")
        refreshed = {cid: f for cid, f in refreshed.items() if f is not None and cid not in forgetting}
        if refreshed:  # one statement, no transaction: only a shortcut for the next re-import
            await bulk_repo.set_fingerprints(self.db, tenant, self.fmt.value, refreshed)
        if pending:
            await self._merge_pending(pending)

    def _not_mergeable(self, p: _Prepared, conversation_id: uuid.UUID) -> None:
        self.report.existing.append(conversation_id)
        self.report.warnings.append(
            f"{p.external_id}: imported before message ids were recorded, so it cannot be merged"
        )

    async def _rows_needed(
        self, tx: Transaction, lazy: list[_Merging]
    ) -> tuple[dict[uuid.UUID, list[Any]], set[uuid.UUID]]:
        """The rows a merge of grown ChatGPT conversations needs, read under their locks: of a conversation
        whose seen nodes are unchanged, only the messages that place its new nodes (a few statements for the
        batch, whatever the conversations' sizes); of one with a changed node, all of them. And the grown
        conversations another import merged into since their earlier import's node digests were read (outside the
        lock): a node new to those digests is stored already. Their rows are read whole, and they are merged whole
        (by source id: nothing is added twice)."""
        tenant = self.principal.tenant_id
        whole = [m.conversation_id for m in lazy if not _only_new(m)]
        rows = await bulk_repo.merge_targets(tx, tenant, whole) if whole else {}
        grown = [m for m in lazy if m.conversation_id not in rows]
        known: dict[uuid.UUID, dict[str, bool]] = {m.conversation_id: {} for m in grown}
        found: dict[uuid.UUID, list[Any]] = {m.conversation_id: [] for m in grown}
        # The first round asks for the part the plan made before the transaction was made from (`_plan_ahead`):
        # its new nodes (none should be stored) and the nodes the earlier import saw that place them (all should
        # be), in one statement. Only a conversation where one of those is not stored asks again, walking up
        # (`chatgpt.stored_keys_needed`: what the first round told is known, it asks for what is not).
        new: dict[uuid.UUID, list[str]] = {}
        asked: list[tuple[uuid.UUID, list[str]]] = []
        for m in grown:
            seen = m.p.seen or {}
            if m.ahead_keys is not None:
                keys = set(m.ahead_keys)
            else:
                keys = chatgpt.stored_keys_needed(m.p.item.value, seen, {})
                keys.update(k for k in m.digests or () if k not in seen)
            new[m.conversation_id] = [k for k in keys if k not in seen]
            asked.append((m.conversation_id, sorted(keys)))
        reach = 1  # doubled each round (chatgpt.stored_keys_needed)
        while asked:
            reach *= 2
            for cid, asked_keys in asked:
                known[cid].update(dict.fromkeys(asked_keys, False))
            for row in await bulk_repo.merge_targets_by_key(
                tx, tenant, [c for c, _ in asked], [k for _, k in asked]
            ):
                known[row["conversation_id"]][row["import_key"]] = True
                found[row["conversation_id"]].append(row)
            asked = [
                (m.conversation_id, sorted(keys))
                for m in grown
                if not _all_stored(known[m.conversation_id], m.p.seen or {}, m.p.item.value)
                and (
                    keys := chatgpt.stored_keys_needed(
                        m.p.item.value, m.p.seen or {}, known[m.conversation_id], reach
                    )
                )
            ]
        stale = {cid for cid, keys in new.items() if any(known[cid].get(k) for k in keys)}
        if stale:
            found.update(await bulk_repo.merge_targets(tx, tenant, sorted(stale)))
        return {**rows, **found}, stale

    def _plan_ahead(self, m: _Merging) -> None:
        """Plan a grown ChatGPT conversation before its transaction, so that this CPU work overlaps with the
        statements of the batches in flight: the whole conversation when a node the earlier import saw changed
        (that plan does not depend on the stored rows), else the part `chatgpt.reduced` keeps if every node the
        earlier import saw is stored (each new node's walk stops at its first seen ancestor). Under the lock the
        part is worked out again from the rows read there, and the plan used only if it is the same
        (`_lazy_plan`)."""
        value, seen = m.p.item.value, m.p.seen
        keys: frozenset[str] | None = None
        if m.only_new and seen is not None:
            part = chatgpt.reduced(value, seen, seen.keys(), m.digests, only_new=True)
            if part.conversation is not None:
                keys = frozenset(part.conversation["mapping"])
                value = part.conversation
        m.ahead, m.ahead_error = self._planned(value, m.digests)
        m.ahead_keys = keys
        m.planned_ahead = True

    def _lazy_plan(
        self, m: _Merging, rows: list[Any], stale: bool
    ) -> tuple[importer.Plan | None, str | None, set[str]]:
        """The plan of a grown ChatGPT conversation from the rows read under its lock (`_rows_needed`), and the
        source ids stored: the one made before the transaction when the part it was made from is the part these
        rows give (the usual case), else made now. A plan made before is used once (a retry plans again)."""
        stored = {r["import_key"] for r in rows if r["import_key"] is not None}
        seen = m.p.seen or {}
        value = m.p.item.value
        if (
            m.planned_ahead
            and m.ahead_keys is not None
            and not stale
            and all(k in stored or chatgpt.without_parent(value, k) for k in m.ahead_keys if k in seen)
        ):
            # Every node of the part that the earlier import saw is stored or has no parent (and no new one is
            # stored, else `stale`): each walk up from a new node stops where it stopped before the transaction, so
            # the part is the same.
            m.planned_ahead = False
            return m.ahead, m.ahead_error, stored
        keys: frozenset[str] | None = None
        if m.only_new and not stale:
            part = chatgpt.reduced(value, m.p.seen, stored, m.digests, only_new=True)
            if part.conversation is not None:
                keys = frozenset(part.conversation["mapping"])
                value = part.conversation
        if m.planned_ahead and keys == m.ahead_keys:
            m.planned_ahead = False
            return m.ahead, m.ahead_error, stored
        m.planned_ahead = False
        plan, error = self._planned(value, m.digests)
        return plan, error, stored

    async def _manageable(
        self, tx: Transaction, pending: list[_Merging], failed: list[tuple[_Prepared, str]]
    ) -> list[_Merging]:
        """The conversations the user may still merge into (the owner/admin rule of imports into an existing
        conversation, and it must be open), locked in one statement in id order (two imports merging into the
        same conversations cannot deadlock); the others go to `failed`. One that is not plainly manageable and
        hot goes through `require` alone (its exact error, or its content back from the cold tier)."""
        rows = await conversations.conversations_with_access(
            tx,
            self.principal.tenant_id,
            [m.conversation_id for m in pending],
            self.principal.user_id,
            lock=True,
        )
        by_id = {r["id"]: r for r in rows}
        ready = []
        for m in sorted(pending, key=lambda m: m.conversation_id):
            try:
                row = by_id.get(m.conversation_id)
                if row is None or row["cold"] or access_level(self.principal, row) < Access.MANAGE:
                    row = await require(tx, self.principal, m.conversation_id, Access.MANAGE, lock=True)
                require_writable(row)
            except ThreadlineError as exc:
                failed.append((m.p, f"cannot be merged into the earlier import: {exc.message}"))
                continue
            ready.append(m)
        return ready

    async def _merge_pending(self, pending: list[_Merging]) -> None:
        """One transaction for the changed conversations. If it fails, nothing of it stays, and each is tried
        again alone: one that cannot be merged fails by itself, with its reason."""
        tenant, user = self.principal.tenant_id, self.principal.user_id
        failed: list[tuple[_Prepared, str]] = []
        unmergeable: list[_Merging] = []
        targets: list[merging.Target] = []
        forgetting = {m.conversation_id for m in pending if chatgpt_nodes.forgets(m.p.seen)}
        try:
            async with self.db.transaction() as tx:
                ready = await self._manageable(tx, pending, failed)
                fetched, stale = await self._rows_needed(tx, [m for m in ready if m.rows is None])
                # Rows read before the lock (`_merge_batch`) told which conversations changed; they are read again
                # under it (one statement): another import may have added the same new messages since (added
                # twice), or a message may have been deleted (its tombstone given the newer text as an edit).
                read_before = [m.conversation_id for m in ready if m.rows is not None]
                locked_rows = await bulk_repo.merge_targets(tx, tenant, read_before) if read_before else {}
                for m in ready:
                    rows = (
                        locked_rows[m.conversation_id] if m.rows is not None else fetched[m.conversation_id]
                    )
                    plan = m.p.plan
                    if m.rows is None:
                        plan, error, stored = self._lazy_plan(m, rows, m.conversation_id in stale)
                        if plan is None:
                            failed.append((m.p, error or "could not be read"))
                            continue
                        await self._store_whole_texts(
                            plan, {i for i in plan.oversized if plan.messages[i]["key"] not in stored}
                        )
                    assert plan is not None
                    try:
                        merging.unchanged(plan, rows)  # NotMergeable when its rows carry no source ids
                    except merging.NotMergeable:
                        unmergeable.append(m)
                        continue
                    targets.append(merging.Target(plan, m.conversation_id, rows, record_origin=m.p.no_origin))
                    if any(r["deleted"] for r in rows):
                        # A message deleted here, among the rows read whole or in part: see `_merge_batch`. (A
                        # node whose mark left with it from an earlier export is marked again from its row.)
                        forgetting.add(m.conversation_id)
                async with deferring(tx):
                    await merging.merge_many(tx, self.settings, tenant, user, targets)
                    # What each holds now came from these items: their node digests, and the fingerprint of their
                    # bytes (None: not from a file's item, nothing to skip by next time).
                    fingerprint_of = {
                        m.conversation_id: None if m.conversation_id in forgetting else self._fingerprint(m.p)
                        for m in pending
                    }
                    seen_of = {m.conversation_id: m.p.seen for m in pending}
                    await bulk_repo.set_merged_sources(
                        tx,
                        tenant,
                        self.fmt.value,
                        {
                            t.conversation_id: (
                                _forgotten(t.plan.node_digests, t.existing) if t.plan.node_digests else None,
                                fingerprint_of[t.conversation_id],
                                seen_of[t.conversation_id],
                                {m["key"] for m in t.plan.messages},
                            )
                            for t in targets
                        },
                    )
                for t in targets:
                    await mask_logged_events(
                        tx, tenant, self.principal.pii_policy, t.conversation_id
                    )  # privacy
        except Exception as exc:  # noqa: BLE001 - one bad conversation must not stop the others
            if len(pending) > 1:
                for m in pending:
                    await self._merge_pending([m])
                return
            self._unavailable(exc)
            failed = [(pending[0].p, f"could not be merged: {type(exc).__name__}: {exc}")]
            targets, unmergeable = [], []
        by_conversation = {m.conversation_id: m.p for m in pending}
        for t in targets:
            p = by_conversation[t.conversation_id]
            p.plan = t.plan
            merged = t.result
            if merged.added or merged.updated:
                self.report.merged.append(
                    MergedConversation(t.conversation_id, p.external_id, merged.added, merged.updated)
                )
                self.report.messages += merged.added
                self.report.warnings.extend(
                    f"{p.external_id}: {w}" for w in [*t.plan.warnings, *merged.warnings]
                )
            else:
                self.report.existing.append(t.conversation_id)
        for m in unmergeable:
            self._not_mergeable(m.p, m.conversation_id)
        for p, message in failed:
            self._fail_prepared(p, p.external_id, message)

    async def finish(self, *, fatal: str | None = None) -> ImportReport:
        """Insert what is still queued, wait for the inserts in flight, then audit the run."""
        # The last batch is written when nothing is left to read: split across the write slots, its statements run
        # on as many server backends (cores) as the batches before, not in one long transaction alone (the 45 new
        # conversations closing an export grown by 10% were half of its re-import's time).
        pending, self._pending, self._pending_bytes = self._pending, [], 0
        parts = min(self._concurrency, len(pending))
        size = -(-len(pending) // parts) if parts else 0
        for start in range(0, len(pending), size or 1):
            self._pending = pending[start : start + size]
            self._pending_bytes = sum(p.item.size for p in self._pending)
            await self._flush()
        if self._tasks:
            await asyncio.gather(*list(self._tasks))
        # Folders, pins, bookmarks and links refer to other conversations and messages: once all are stored.
        self.report.warnings.extend(
            await organised.restore(self.db, self.settings, self.principal, self.fmt, self._organised)
        )
        if fatal is not None:
            self.report.failures.append(ImportFailure(-1, None, fatal))
        async with self.db.transaction() as tx:
            target = (Kind.CONVERSATION, self.report.imported[0]) if len(self.report.imported) == 1 else None
            await record(tx, self.principal, AuditAction.CONVERSATION_IMPORT, target, self.summary())
        return self.report

    def summary(self) -> dict[str, Any]:
        r = self.report
        return {
            "format": self.fmt.value,
            "imported": len(r.imported),
            "skipped": r.skipped,
            "merged": len(r.merged),
            "failed": len(r.failures),
            "messages": r.messages,
        }


async def import_data(
    db: Database,
    settings: Settings,
    principal: Principal,
    fmt: ImportFormat,
    data: Any,
    *,
    target_conversation_id: uuid.UUID | None = None,
    all_or_nothing: bool,
) -> ImportReport:
    """Import JSON sent through the API. With `all_or_nothing`, one invalid conversation refuses them all.

    A request over the size caps (request_limits) is refused whole before anything is written, and an
    accepted one draws from the `mutations` budget by its size."""
    run = Importer(db, settings, principal, fmt, target_conversation_id=target_conversation_id)
    await run.check_access()
    request_limits.check_bytes(data, settings)
    items = items_of(data)
    request_limits.check_conversations(len(items), settings)  # before parsing: one item is at least one
    # Parsing and planning is CPU work (seconds for the 8 MB a request may carry): off the event loop, so the
    # process goes on serving other requests meanwhile, and stopped as soon as the caps are passed.
    prepared = await asyncio.to_thread(_prepare_within_caps, run, items, settings)
    conversations = len(prepared) + len(run.report.failures)
    messages = sum(len(p.plan.messages) for p in prepared if p.plan is not None)
    if all_or_nothing and run.report.failures:
        failures = run.report.failures
        first = failures[0]
        await _audit_refusal(db, run, conversations, failures)
        raise bad_input(
            f"{len(failures)} conversation(s) cannot be imported, so none was: item {first.index}: {first.message}",
            argument="input.data",
            failures=[
                {"index": f.index, "externalId": f.external_id, "message": f.message} for f in failures
            ],
        )
    cost = request_limits.mutation_cost(conversations, messages, settings)
    await ratelimits.spend_by_size(db, settings, principal, "mutations", cost - 1)
    if not all_or_nothing:
        await run.submit(prepared)
        return await run.finish()
    # All or nothing past planning too: a conversation the database refuses while it is stored (a batch's failure
    # rolls back to its savepoint, and each of the batch is tried again alone, as ever) refuses the others with it.
    refused: list[ImportFailure] = []
    # Its events in one statement before the commit (events.publish.deferring), not batch by batch: an event id
    # drawn holds back every hub's cursor for tenant-wide streams (viewerEvents, of every tenant) until its
    # transaction ends, and this one lasts the whole import. Under MASK_ON_READ each conversation's logged events
    # are masked once stored (privacy.writing.mask_logged_events), so they go out batch by batch as before.
    masked = pii_policy(principal.pii_policy) is PiiPolicy.MASK_ON_READ
    try:
        async with db.transaction() as tx, contextlib.nullcontext() if masked else deferring(tx):
            run.db, run.inline = WithinTransaction(db, tx, savepoints=True), True
            await run.submit(prepared)
            report = await run.finish()
            if run.outage is not None:
                # Not refused: the database could not store it (UNAVAILABLE, retried), and nothing says refused.
                raise run.outage
            if report.failures:
                refused = report.failures
                first = refused[0]
                raise bad_input(
                    f"{len(refused)} conversation(s) could not be stored, so none was imported: item "
                    f"{first.index}: {first.message}",
                    argument="input.data",
                    failures=[
                        {"index": f.index, "externalId": f.external_id, "message": f.message} for f in refused
                    ],
                )
    except ThreadlineError:
        if refused:  # rolled back: its audit entry with it
            await _audit_refusal(db, run, conversations, refused)
        raise
    return report


async def _audit_refusal(
    db: Database, run: Importer, conversations: int, failures: list[ImportFailure]
) -> None:
    """An all-or-nothing import refused whole is audited as refused, in a transaction of its own: the import's
    entry (`Importer.finish`) went with the import's rollback, or was never written. Counts only, as ever."""
    async with db.transaction() as tx:
        await record(
            tx,
            run.principal,
            AuditAction.CONVERSATION_IMPORT,
            None,
            {
                "format": run.fmt.value,
                "refused": True,
                "conversations": conversations,
                "imported": 0,
                "merged": 0,
                "failed": len(failures),
                "messages": 0,
            },
        )


def _prepare_within_caps(run: Importer, items: list[Item], settings: Settings) -> list[_Prepared]:
    """`run.prepare` of each item (in a worker thread: nothing here touches the database or the loop), refused
    with the caps' error once the conversations (refused ones included: a user export holds several in one item)
    or the messages planned pass them: the items after that are not parsed at all."""
    prepared: list[_Prepared] = []
    messages = 0
    for item in items:
        planned = run.prepare(item)
        prepared.extend(planned)
        messages += sum(len(p.plan.messages) for p in planned if p.plan is not None)
        request_limits.check_conversations(len(prepared) + len(run.report.failures), settings)
        request_limits.check_messages(messages, settings)
    return prepared


async def import_stream(run: Importer, items: Iterable[Item]) -> ImportReport:
    """Import items read lazily from a file (the CLI): parsing overlaps with the inserts in flight."""
    from threadline.porting.jsonstream import JsonStreamError

    await run.check_access()
    fatal = None
    try:
        for item in items:
            await run.submit(run.prepare(item))
    except JsonStreamError as exc:
        fatal = str(exc)
    return await run.finish(fatal=fatal)


async def audited_export(
    db: Database, actor: Actor, action: AuditAction, target: tuple[Kind, uuid.UUID], details: dict[str, Any]
) -> None:
    async with db.transaction() as tx:
        await record(tx, actor, action, target, details)
