"""`threadline keys rotate` and `keys seal`: online, in short transactions, resumable from `key_rotation`.

Rotation re-wraps every data key not under the current master key (keyset batches by key id; each batch commits
its position). With `--reencrypt` it then retires every active data key (new ones are made on first use), waits
`key_cache_seconds` (after which no process seals with a retired key: each has read the active keys again), and
seals every sealed value again under the active key of the same owner, place by place (PLACES): cold documents,
the text columns, content parts, attachment entries, the event log's payloads, file chunks in PostgreSQL, file
bytes in the directory and S3 stores, the cold documents frozen meanwhile once more, and the hot places once more
(ROTATE_PLACES: values a writer sealed with a retired key and committed after the first walk). Each batch locks only
its rows (FOR UPDATE) for one short transaction and commits its position, so a run stopped anywhere resumes where
the last committed batch left off. Writers keep working throughout: a value written meanwhile is sealed with
whatever key is active then, and a read opens any key that is not shredded. Once a re-encryption is done, no
value is readable only under a key it retired: `keys shred --retired` erases those keys (shred_retired).

`keys seal` seals what was stored plain (before encryption was on) in the same places, the same way.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

import orjson
from cryptography.exceptions import InvalidTag

from threadline.crypto import envelope, seal_attachment, seal_event_payload, seal_parts
from threadline.crypto import repository as repo
from threadline.crypto.keyring import UNAVAILABLE, DataKey, Keyring, key_context
from threadline.db import Database, Executor
from threadline.files import repository as file_repo
from threadline.files import service as file_store
from threadline.ids import parse_id
from threadline.settings import Settings
from threadline.tiers import document as cold

_ZERO = uuid.UUID(int=0)
Progress = Callable[[dict[str, Any]], None]

# Where sealed values live, in the order a re-encryption walks them. Cold documents come first (a restore
# meanwhile brings new values into the hot tables) and last ("cold-again": those frozen since the keys were
# retired, which may hold hot rows the passes had not reached yet).
TEXT_PLACES = tuple(f"{table}.{column}" for table, column in repo.SEALED_COLUMNS)
JSON_PLACES = tuple(f"{table}.{column}" for table, column in repo.JSON_SEALED)
PLACES: tuple[str, ...] = (
    "cold",
    *TEXT_PLACES,
    *JSON_PLACES,
    "stream_event.payload",
    "file_chunk.data",
    "file_store",
    "cold-again",
)
# `keys seal`: the same places but the second cold pass (nothing is retired).
SEAL_PLACES: tuple[str, ...] = PLACES[:-1]
# A re-encryption then walks the hot places once more ("... (check)"), and again while a check walk finds any:
# a writer that sealed with a retired key it still held before the wait ended, and committed only after the first
# walk passed its row (held up between sealing and its commit, e.g. waiting on a lock), left a value under a
# retired key that `keys shred --retired` would make unreadable. A check walk
# opens nothing under the active keys (it reads each value's key id), so it costs a read of each place. What can
# still escape: a write sealed before the wait ended and committed after the last (clean) check walk passed its
# row, i.e. in flight longer than the wait plus two whole walks.
CHECK = " (check)"
ROTATE_PLACES: tuple[str, ...] = PLACES + tuple(p + CHECK for p in PLACES[1:-1])
FIRST_CHECK = len(PLACES)
_COLD_BATCH = 10  # documents per transaction: each may be a 10,000-message conversation
_FILE_BATCH = 20  # blobs per listing (each is rewritten under its tenant's file lock, one at a time)


class _Batch:
    """One batch's keys: the data keys its sealed values name (loaded once), and the active key of each of their
    owners, to seal them again with (`reseal_*`); or the active keys of plain values' owners (`seal_*`)."""

    def __init__(self, keyring: Keyring) -> None:
        self.keyring = keyring
        self.active: dict[tuple[uuid.UUID, uuid.UUID | None], DataKey] = {}

    async def load(self, key_ids: Iterable[uuid.UUID]) -> None:
        wanted = set(key_ids)
        if not wanted:
            return
        await self.keyring.load(wanted)
        for key_id in wanted:
            key = self.keyring.cached(key_id)
            if key is not None and key.cipher is not None:
                await self.owner_key(key.tenant_id, key.user_id)

    async def owner_key(self, tenant_id: uuid.UUID, user_id: uuid.UUID | None) -> DataKey:
        scope = (tenant_id, user_id)
        key = self.active.get(scope)
        if key is None:
            key = self.active[scope] = await self.keyring.active_key(tenant_id, user_id)
        return key

    async def seal(self, tenant_id: uuid.UUID, text: str, user_id: uuid.UUID | None) -> str:
        """Plain `text` sealed with its owner's active key (`keys seal`), the key looked up once a batch."""
        key = await self.owner_key(tenant_id, user_id)
        assert key.cipher is not None
        return envelope.seal(key.cipher, key.id, tenant_id, text)

    def _target(self, key_id: uuid.UUID) -> tuple[DataKey, DataKey] | None:
        """The key a value names and its owner's active key, when the value should be sealed again."""
        key = self.keyring.cached(key_id)
        if key is None or key.cipher is None:
            return None  # not ours (plaintext that looks sealed), or shredded: nothing to re-seal
        active = self.active.get((key.tenant_id, key.user_id))
        if active is None or active.cipher is None:
            return None
        return key, active

    def reseal_text(self, raw: str) -> str | None:
        """`raw` sealed again under its owner's active key; None when it need not (or cannot) be."""
        found = envelope.segments(raw)
        if not found:
            return None
        target = self._target(found[0].key_id)
        if target is None:
            return None
        key, active = target
        if len(found) == 1 and found[0].key_id == active.id:
            return None
        text = self.keyring.open_loaded(raw)
        if text == raw or text == UNAVAILABLE:
            return None  # a segment it cannot open (shredded meanwhile): left as it is
        assert active.cipher is not None
        return envelope.seal(active.cipher, active.id, key.tenant_id, text)

    def reseal_tree(self, value: Any) -> tuple[Any, int]:
        """A JSON value with each sealed string sealed again; and how many were."""
        if isinstance(value, str):
            if not value.startswith(envelope.PREFIX):
                return value, 0
            resealed = self.reseal_text(value)
            return (value, 0) if resealed is None else (resealed, 1)
        if isinstance(value, dict):
            out: dict[str, Any] = {}
            total = 0
            for k, v in value.items():
                out[k], n = self.reseal_tree(v)
                total += n
            return (out, total) if total else (value, 0)
        if isinstance(value, list):
            items = []
            total = 0
            for v in value:
                item, n = self.reseal_tree(v)
                items.append(item)
                total += n
            return (items, total) if total else (value, 0)
        return value, 0

    def reseal_record(self, data: bytes) -> bytes | None:
        """Sealed bytes (a file chunk, a store's record) sealed again; None when they need not (or cannot) be."""
        segment = envelope.bytes_segment(data)
        if segment is None:
            return None
        target = self._target(segment.key_id)
        if target is None:
            return None
        key, active = target
        if segment.key_id == active.id:
            return None
        assert key.cipher is not None and active.cipher is not None
        try:
            plain = envelope.open_bytes(key.cipher, key.tenant_id, segment)
        except InvalidTag:
            return None
        return envelope.seal_bytes(active.cipher, active.id, key.tenant_id, plain)

    def ours(self, data: bytes) -> bool:
        """Whether `data` is sealed with a data key of this database (bytes that merely start like sealed ones
        are plain: a reader passes them as they are)."""
        segment = envelope.bytes_segment(data)
        return segment is not None and self.keyring.cached(segment.key_id) is not None


def _text_ids(values: Iterable[str]) -> set[uuid.UUID]:
    return {s.key_id for v in values for s in envelope.segments(v) or ()}


def _tree_ids(value: Any, into: set[uuid.UUID]) -> set[uuid.UUID]:
    if isinstance(value, str):
        if value.startswith(envelope.PREFIX):
            into.update(s.key_id for s in envelope.segments(value) or ())
    elif isinstance(value, dict):
        for v in value.values():
            _tree_ids(v, into)
    elif isinstance(value, list):
        for v in value:
            _tree_ids(v, into)
    return into


def _bytes_ids(values: Iterable[bytes]) -> set[uuid.UUID]:
    return {s.key_id for v in values if (s := envelope.bytes_segment(v)) is not None}


def _place(places: tuple[str, ...], position: dict[str, Any]) -> int:
    if "step" in position:
        return int(position["step"])
    return int(position.get("table", 0)) + 1  # a rotation stopped by an earlier version: its text column


async def rotate(
    db: Database,
    keyring: Keyring,
    *,
    reencrypt: bool,
    batch: int = 500,
    max_batches: int | None = None,
    settings: Settings | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Run (or resume) the rotation to the current master key; stops after `max_batches` batches if given
    (its report says `finished: false`). `settings` locate the file stores (the directory, S3)."""
    target = keyring.masters.current.key_id
    state = await repo.rotation(db)
    if (
        state is None
        or state["finished_at"] is not None
        or state["target_master_key_id"] != target
        or (reencrypt and not state["reencrypt"])
    ):
        await repo.start_rotation(db, target, reencrypt)
        state = await repo.rotation(db)
        assert state is not None
    reencrypt = bool(state["reencrypt"])
    phase: str = state["phase"]
    position: dict[str, Any] = state["position"] or {}
    batches = 0

    def spent() -> bool:
        return max_batches is not None and batches >= max_batches

    while phase == "rewrap" and not spent():
        after = uuid.UUID(position.get("after", str(_ZERO)))
        async with db.transaction() as tx:
            rows = await repo.keys_to_rewrap(tx, target, after, batch)
            for row in rows:
                master = keyring.masters.by_id(row["master_key_id"])
                if master is None:
                    raise RuntimeError(
                        f"data key {row['id']} is wrapped by master key {row['master_key_id']}, which is not "
                        "configured: list it in THREADLINE_MASTER_KEYS_PREVIOUS"
                    )
                context = key_context(row["id"], row["tenant_id"], row["user_id"])
                secret = master.unwrap(bytes(row["wrapped"]), context)
                await repo.rewrap(tx, row["id"], target, keyring.masters.current.wrap(secret, context))
            if rows:
                position = {"after": str(rows[-1]["id"])}
            else:
                phase, position = ("retire" if reencrypt else "done"), {}
            await repo.note_rotation(tx, phase, position, keys=len(rows))
        batches += 1
        _report(progress, "rotate", phase, position)

    if phase == "retire" and not spent():
        async with db.transaction() as tx:
            for owner in await repo.key_owners(tx):
                await repo.retire_active(tx, owner["tenant_id"], owner["user_id"])
            retired = await repo.now(tx)
            phase = "reseal"
            position = {"step": 0, "after": None, "retiredAt": retired.isoformat(), "counts": {}}
            await repo.note_rotation(tx, phase, position)
        keyring.forget_active()
        batches += 1

    if phase == "reseal" and not spent():
        # Processes hold the active keys they read for `key_cache_seconds`: once that has passed since the retire,
        # none seals with a retired key any more, and what the passes re-seal stays re-sealed.
        retired_at = datetime.fromisoformat(position["retiredAt"])
        wait = keyring.cache_seconds - (datetime.now(UTC) - retired_at).total_seconds()
        if wait > 0:
            _report(progress, "rotate", "waiting", {"seconds": round(wait, 1)})
            await asyncio.sleep(wait)

    while phase == "reseal" and not spent():
        async with db.transaction() as tx:
            step = _place(ROTATE_PLACES, position)
            finished, n, position = await _step(
                tx, keyring, settings, ROTATE_PLACES, position, batch, reseal=True
            )
            if step >= FIRST_CHECK and n:
                position["lateFound"] = position.get("lateFound", 0) + n
            if finished and position.get("lateFound"):
                # This check walk found late values: walk again until one finds none (each late writer sealed
                # before the wait ended, so they run out).
                position = {**position, "step": FIRST_CHECK, "after": None, "lateFound": 0}
                position["checkWalks"] = position.get("checkWalks", 1) + 1
            elif finished:
                phase = "done"
                position = {"retiredAt": position["retiredAt"], "counts": position["counts"]}
            await repo.note_rotation(tx, phase, position, rows=n)
        batches += 1
        _report(progress, "rotate", phase, position)

    final = await repo.rotation(db)
    assert final is not None
    return {
        "finished": final["phase"] == "done",
        "phase": final["phase"],
        "masterKeyId": target,
        "reencrypt": final["reencrypt"],
        "keysRewrapped": final["keys_done"],
        "rowsResealed": final["rows_done"],
        "resealed": (final["position"] or {}).get("counts", {}),
        "position": final["position"],
    }


_last_report = [0.0]


def _report(progress: Progress | None, job: str, phase: str, position: dict[str, Any]) -> None:
    """At most one progress line a second (and every phase change and the last)."""
    if progress is None:
        return
    now = time.monotonic()
    if phase in ("done", "waiting") or now - _last_report[0] >= 1.0:
        _last_report[0] = now
        step = position.get("step")
        places = SEAL_PLACES if job == "seal" else ROTATE_PLACES
        place = places[step] if isinstance(step, int) and step < len(places) else None
        progress({"job": job, "phase": phase, "place": place, **position})


async def _step(
    tx: Executor,
    keyring: Keyring,
    settings: Settings | None,
    places: tuple[str, ...],
    position: dict[str, Any],
    batch: int,
    *,
    reseal: bool,
) -> tuple[bool, int, dict[str, Any]]:
    """One batch of the place `position` is at: whether every place is done, the values re-sealed or sealed, and
    the next position (whose counts by place add this batch's)."""
    step = _place(places, position)
    counts: dict[str, int] = dict(position.get("counts") or {})
    base = {k: v for k, v in position.items() if k not in ("step", "after", "table", "counts")}
    if step >= len(places):
        return True, 0, {**base, "counts": counts}
    place = places[step].removesuffix(CHECK)
    after = position.get("after")
    keys = _Batch(keyring)
    if place in ("cold", "cold-again"):
        since = datetime.fromisoformat(base["retiredAt"]) if place == "cold-again" else None
        n, last = await _cold(
            tx, keys, uuid.UUID(after or str(_ZERO)), min(batch, _COLD_BATCH), since, reseal
        )
    elif place in TEXT_PLACES:
        table, column = place.split(".")
        cursor: uuid.UUID | int = (
            int(after or 0) if table in repo.BIGINT_IDS else uuid.UUID(after or str(_ZERO))
        )
        n, last = await _text(tx, keys, table, column, cursor, batch, reseal)
    elif place in JSON_PLACES:
        table, column = place.split(".")
        n, last = await _json(tx, keys, table, column, uuid.UUID(after or str(_ZERO)), batch, reseal)
    elif place == "stream_event.payload":
        n, last = await _events(tx, keys, int(after or 0), batch, reseal)
    elif place == "file_chunk.data":
        blob, seq = after or (str(_ZERO), -1)
        n, last = await _chunks(tx, keys, uuid.UUID(blob), int(seq), batch, reseal)
    else:
        if settings is None:
            raise RuntimeError("re-sealing the file stores needs the settings that locate them")
        n, last = await _stored_files(
            tx, keys, settings, uuid.UUID(after or str(_ZERO)), min(batch, _FILE_BATCH), reseal
        )
    if n:
        counts[places[step]] = counts.get(places[step], 0) + n
    if last is None:
        return False, n, {**base, "step": step + 1, "after": None, "counts": counts}
    return False, n, {**base, "step": step, "after": last, "counts": counts}


async def _text(
    tx: Executor, keys: _Batch, table: str, column: str, after: uuid.UUID | int, limit: int, reseal: bool
) -> tuple[int, Any]:
    if reseal:
        rows = await repo.sealed_batch(tx, table, column, after, limit)
        raws = [(row["id"], bytes(row["raw"]).decode()) for row in rows]
        await keys.load(_text_ids(raw for _, raw in raws))
        ids: list[Any] = []
        values: list[str] = []
        for row_id, raw in raws:
            resealed = keys.reseal_text(raw)
            if resealed is not None:
                ids.append(row_id)
                values.append(resealed)
    else:
        rows = await repo.plain_batch(tx, table, column, after, limit)
        ids = [r["id"] for r in rows]
        values = [await keys.seal(r["tenant_id"], r["value"], r["user_id"]) for r in rows]
    if ids:
        await repo.reseal(tx, table, column, ids, values)
    if not rows:
        return len(ids), None
    last = rows[-1]["id"]
    return len(ids), (last if isinstance(last, int) else str(last))


async def _json(
    tx: Executor, keys: _Batch, table: str, column: str, after: uuid.UUID, limit: int, reseal: bool
) -> tuple[int, Any]:
    """Content parts (text, tool arguments and results) and imports' attachment entries."""
    rows = await repo.json_batch(tx, table, column, after, limit)
    parsed = [(row, orjson.loads(row["raw"])) for row in rows]
    ids: list[uuid.UUID] = []
    texts: list[str] = []
    total = 0
    if reseal:
        found: set[uuid.UUID] = set()
        for _, value in parsed:
            _tree_ids(value, found)
        await keys.load(found)
    for row, value in parsed:
        if reseal:
            stored, n = keys.reseal_tree(value)
        else:
            stored = (
                await seal_parts(row["tenant_id"], value, row["user_id"], skip_sealed=True)
                if table == "message"
                else await seal_attachment(row["tenant_id"], value, skip_sealed=True)
            )
            n = 1 if stored != value else 0
        if n:
            ids.append(row["id"])
            texts.append(orjson.dumps(stored).decode())
            total += n
    if ids:
        await repo.set_json(tx, table, column, ids, texts)
    return total, (str(rows[-1]["id"]) if rows else None)


async def _events(tx: Executor, keys: _Batch, after: int, limit: int, reseal: bool) -> tuple[int, Any]:
    """The event log: payloads carrying text (snapshots, deltas), as publish() seals new ones."""
    events = await repo.events_batch(tx, after, limit)
    parsed = [(event, orjson.loads(event["raw"])) for event in events]
    if reseal:
        found: set[uuid.UUID] = set()
        for _, payload in parsed:
            _tree_ids(payload, found)
        await keys.load(found)
    changed: list[tuple[int, Any]] = []
    total = 0
    for event, payload in parsed:
        if reseal:
            stored, n = keys.reseal_tree(payload)
        elif isinstance(payload, dict):
            stored = await seal_event_payload(event["tenant_id"], payload)
            n = 1 if stored != payload else 0
        else:
            n = 0
        if n:
            changed.append((event["id"], stored))
            total += n
    if changed:
        await repo.set_payloads(tx, [i for i, _ in changed], [orjson.dumps(p).decode() for _, p in changed])
    return total, (events[-1]["id"] if events else None)


async def _chunks(
    tx: Executor, keys: _Batch, after_blob: uuid.UUID, after_seq: int, limit: int, reseal: bool
) -> tuple[int, Any]:
    """File chunks stored in PostgreSQL: each chunk is one sealed value."""
    rows = await repo.chunks_batch(tx, after_blob, after_seq, limit)
    datas = [bytes(r["data"]) for r in rows]
    await keys.load(_bytes_ids(datas))
    blobs: list[uuid.UUID] = []
    seqs: list[int] = []
    out: list[bytes] = []
    for row, data in zip(rows, datas, strict=True):
        if reseal:
            new = keys.reseal_record(data)
        elif data and not keys.ours(data):
            key = await keys.owner_key(row["tenant_id"], None)
            assert key.cipher is not None
            new = envelope.seal_bytes(key.cipher, key.id, row["tenant_id"], data)
        else:
            new = None
        if new is not None:
            blobs.append(row["blob_id"])
            seqs.append(row["seq"])
            out.append(new)
    if out:
        await repo.set_chunks(tx, blobs, seqs, out)
    return len(out), ([str(rows[-1]["blob_id"]), rows[-1]["seq"]] if rows else None)


async def _stored_files(
    tx: Executor, keys: _Batch, settings: Settings, after: uuid.UUID, limit: int, reseal: bool
) -> tuple[int, Any]:
    """File bytes in the directory and S3 stores: each blob rewritten whole (every record sealed again, or a plain
    one sealed block by block as an upload seals it) under its tenant's file lock, then renamed or put over the
    old bytes. The listing's transaction holds the locks till the batch commits."""
    blobs = await repo.stored_blobs_batch(tx, after, limit)
    total = 0
    done: Any = None  # the last blob this batch is through with
    for blob in blobs:
        tenant_id, sha256, storage = blob["tenant_id"], bytes(blob["sha256"]), blob["storage"]
        await file_repo.lock_tenant_files(tx, tenant_id)
        if not await repo.blob_present(tx, tenant_id, blob["id"]):
            done = str(blob["id"])
            continue  # deleted meanwhile: its bytes go with the clean-up
        data = await file_store.stored_blob(settings, tenant_id, sha256, storage)
        if data is None:
            if done is not None:
                # The blobs before it are rewritten already (the stores are not transactional): their position and
                # counts commit first; the next batch starts at this one and stops there.
                return total, done
            # The row is there (its bytes were written before it committed) but this process does not see them: the
            # store is not the one the servers use. Done without them, the rotation would let `keys shred --retired`
            # make them unreadable.
            raise RuntimeError(
                f"file blob {blob['id']} is not in the {storage} store this process is configured with "
                "(THREADLINE_FILE_DIRECTORY, THREADLINE_FILE_S3_*): run it with the servers' file store settings"
            )
        done = str(blob["id"])
        if not data:
            continue  # an empty file
        records = file_store.stored_records(data)
        await keys.load(_bytes_ids(records[:1]))
        if keys.ours(records[0]):
            if not reseal:
                continue
            await keys.load(_bytes_ids(records))
            resealed = [keys.reseal_record(r) for r in records]
            if any(r is None for r in resealed):
                continue  # under the active key already, or a record that does not open (shredded)
            new = b"".join(r for r in resealed if r is not None)
        else:
            if reseal:
                continue  # stored plain: `keys seal` seals it
            key = await keys.owner_key(tenant_id, None)
            assert key.cipher is not None
            new = b"".join(
                envelope.seal_bytes(key.cipher, key.id, tenant_id, block)
                for block in file_store.plain_blocks(data)
            )
        await file_store.replace_blob(settings, tenant_id, sha256, storage, new)
        total += 1
    return total, (str(blobs[-1]["id"]) if blobs else None)


async def _cold(
    tx: Executor,
    keys: _Batch,
    after: uuid.UUID,
    limit: int,
    frozen_since: datetime | None,
    reseal: bool,
) -> tuple[int, Any]:
    """Cold documents (tiers/): each table's rows are read from the document, their sealed strings sealed again
    (or, sealing, the content columns of plain rows sealed as their writers seal them), and the document
    compressed again with its codec."""
    docs = await repo.cold_batch(tx, after, limit, frozen_since)
    total = 0
    for doc in docs:
        tables = cold.decode(bytes(doc["document"]), doc["codec"])
        rows = [orjson.loads(t.json) for t in tables]
        if reseal:
            found: set[uuid.UUID] = set()
            _tree_ids(rows, found)
            await keys.load(found)
            new_rows, n = keys.reseal_tree(rows)
        else:
            new_rows, n = await _seal_cold_rows(keys, doc["tenant_id"], [t.name for t in tables], rows)
        if not n:
            continue
        rebuilt = [
            cold.TableRows(t.name, t.columns, t.rows, orjson.dumps(r))
            for t, r in zip(tables, new_rows, strict=True)
        ]
        await repo.set_cold(tx, doc["conversation_id"], cold.encode(rebuilt, doc["codec"]))
        total += n
    return total, (str(docs[-1]["conversation_id"]) if docs else None)


def _owner(row: dict[str, Any], column: str | None) -> uuid.UUID | None:
    value = row.get(column) if column else None
    if not isinstance(value, str):
        return None
    try:
        return uuid.UUID(value)
    except ValueError:
        found = parse_id(value)
        return found[1] if found else None


async def _seal_cold_rows(
    keys: _Batch, tenant_id: uuid.UUID, names: list[str], tables: list[Any]
) -> tuple[list[Any], int]:
    """A plain document's rows with the values the writers seal sealed (`keys seal`): the text columns and JSON
    columns of repo.SEALED_COLUMNS and repo.JSON_SEALED, with the key of the owner their writers use."""
    out: list[Any] = []
    total = 0
    for name, rows in zip(names, tables, strict=True):
        text_columns = [c for t, c in repo.SEALED_COLUMNS if t == name]
        json_columns = [c for t, c in repo.JSON_SEALED if t == name]
        if not (text_columns or json_columns) or not isinstance(rows, list):
            out.append(rows)
            continue
        sealed_rows = []
        for row in rows:
            row = dict(row)
            for column in text_columns:
                value = row.get(column)
                if isinstance(value, str) and value and not value.startswith(envelope.PREFIX):
                    owner = _owner(row, repo.OWNERS.get(name))
                    row[column] = await keys.seal(tenant_id, value, owner)
                    total += 1
            for column in json_columns:
                value = row.get(column)
                if value is None:
                    continue
                stored = (
                    await seal_parts(
                        tenant_id, value, _owner(row, repo.JSON_OWNERS.get(name)), skip_sealed=True
                    )
                    if name == "message"
                    else await seal_attachment(tenant_id, value, skip_sealed=True)
                )
                if stored != value:
                    row[column] = stored
                    total += 1
            sealed_rows.append(row)
        out.append(sealed_rows)
    return out, total


async def seal_plain(
    db: Database,
    keyring: Keyring,
    *,
    batch: int = 500,
    max_batches: int | None = None,
    settings: Settings | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """`threadline keys seal`: seal the content written before encryption was turned on (or by a writer that
    stores it plain), place by place (SEAL_PLACES) in keyset batches, resumable like the rotation. The full-text
    vectors stay (the trigger keeps a sealed row's vector, computed from this same text when it was written)."""
    state = await repo.rotation(db, "seal")
    if state is None or state["finished_at"] is not None or state["phase"] in ("json", "events"):
        # (json, events: a run stopped by an earlier version, whose places came in another order: from the start)
        await repo.start_rotation(db, keyring.masters.current.key_id, False, "seal", "seal")
        state = await repo.rotation(db, "seal")
        assert state is not None
    position: dict[str, Any] = state["position"] or {"step": 0, "after": None, "counts": {}}
    if "step" not in position:
        position = {"step": int(position.get("table", 0)) + 1, "after": position.get("after"), "counts": {}}
    phase: str = state["phase"]
    batches = 0
    while phase == "seal" and (max_batches is None or batches < max_batches):
        async with db.transaction() as tx:
            finished, n, position = await _step(
                tx, keyring, settings, SEAL_PLACES, position, batch, reseal=False
            )
            if finished:
                phase, position = "done", {"counts": position["counts"]}
            await repo.note_rotation(tx, phase, position, rows=n, job="seal")
        batches += 1
        _report(progress, "seal", phase, position)
    final = await repo.rotation(db, "seal")
    assert final is not None
    return {
        "finished": final["phase"] == "done",
        "rowsSealed": final["rows_done"],
        "sealed": (final["position"] or {}).get("counts", {}),
        "position": final["position"],
    }


async def shred_retired(keyring: Keyring | None, db: Database) -> int:
    """`keys shred --retired`: erase the data keys a finished re-encryption retired (and older retired ones). Refused
    (ValueError) unless the last rotation re-encrypted and finished: before, values may be readable only under them."""
    state = await repo.rotation(db)
    position = (state["position"] or {}) if state is not None else {}
    if state is None or not state["reencrypt"] or state["phase"] != "done" or "retiredAt" not in position:
        raise ValueError(
            "no finished `keys rotate --reencrypt`: retired keys may still be the only keys of some values"
        )
    ids = await repo.shred_retired(db, datetime.fromisoformat(position["retiredAt"]))
    if keyring is not None:
        keyring.forget(ids)
    return len(ids)


async def shred(
    keyring: Keyring | None, db: Database, tenant_id: uuid.UUID, user_id: uuid.UUID | None
) -> int:
    """Erase a user's data keys (or all of a tenant's): what they sealed reads as unavailable from now on, in
    this process at once and in others within `key_cache_seconds`. The number of keys erased."""
    ids = await repo.shred(db, tenant_id, user_id)
    if keyring is not None:
        keyring.forget(ids)
    return len(ids)
