"""`threadline keys rotate` and `keys shred`: online, in short transactions, resumable from `key_rotation`.

Rotation re-wraps every data key not under the current master key (keyset batches by key id; each batch commits
its position). With `--reencrypt` it then retires every active data key (new ones are made on first use) and
seals every sealed value again under the active key of the same owner, table by table in keyset batches by
row id, each batch locking only its rows (FOR UPDATE) for one short transaction. A run stopped anywhere
resumes where the last committed batch left off. Writers keep working throughout: a value written meanwhile
is sealed with whatever key is active then, and a read opens any key that is not shredded.
"""

from __future__ import annotations

import uuid
from typing import Any

import orjson

from threadline.crypto import envelope, seal_attachment, seal_event_payload, seal_parts
from threadline.crypto import repository as repo
from threadline.crypto.keyring import UNAVAILABLE, Keyring, key_context
from threadline.db import Database

_ZERO = uuid.UUID(int=0)


async def rotate(
    db: Database, keyring: Keyring, *, reencrypt: bool, batch: int = 500, max_batches: int | None = None
) -> dict[str, Any]:
    """Run (or resume) the rotation to the current master key; stops after `max_batches` batches if given
    (its report says `finished: false`)."""
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

    if phase == "retire" and not spent():
        async with db.transaction() as tx:
            for owner in await repo.key_owners(tx):
                await repo.retire_active(tx, owner["tenant_id"], owner["user_id"])
            phase, position = "reseal", {"table": 0, "after": str(_ZERO)}
            await repo.note_rotation(tx, phase, position)
        keyring.forget_active()
        batches += 1

    while phase == "reseal" and not spent():
        table, column = repo.SEALED_COLUMNS[int(position["table"])]
        after = uuid.UUID(position["after"])
        async with db.transaction() as tx:
            rows = await repo.sealed_batch(tx, table, column, after, batch)
            ids, values = await _resealed(keyring, rows)
            if ids:
                await repo.reseal(tx, table, column, ids, values)
            if rows:
                position = {"table": position["table"], "after": str(rows[-1]["id"])}
            elif int(position["table"]) + 1 < len(repo.SEALED_COLUMNS):
                position = {"table": int(position["table"]) + 1, "after": str(_ZERO)}
            else:
                phase, position = "done", {}
            await repo.note_rotation(tx, phase, position, rows=len(ids))
        batches += 1

    final = await repo.rotation(db)
    assert final is not None
    return {
        "finished": final["phase"] == "done",
        "phase": final["phase"],
        "masterKeyId": target,
        "reencrypt": final["reencrypt"],
        "keysRewrapped": final["keys_done"],
        "rowsResealed": final["rows_done"],
        "position": final["position"],
    }


async def _resealed(keyring: Keyring, rows: list[Any]) -> tuple[list[uuid.UUID], list[str]]:
    """New sealed values for the rows whose value is not under its owner's active key (shredded ones stay)."""
    parsed = [(row["id"], bytes(row["raw"]).decode()) for row in rows]
    wanted = {s.key_id for _, raw in parsed for s in envelope.segments(raw) or ()}
    if wanted:
        await keyring.load(wanted)
    ids: list[uuid.UUID] = []
    values: list[str] = []
    for row_id, raw in parsed:
        found = envelope.segments(raw)
        if not found:
            continue
        key = keyring.cached(found[0].key_id)
        if key is None or key.cipher is None:
            continue  # not ours, or shredded: nothing to re-seal
        active = await keyring.active_key(key.tenant_id, key.user_id)
        if len(found) == 1 and found[0].key_id == active.id:
            continue
        text = keyring.open_text(raw)
        if text == raw or text == UNAVAILABLE:
            continue  # a segment it cannot open (shredded meanwhile): left as it is
        assert active.cipher is not None
        ids.append(row_id)
        values.append(envelope.seal(active.cipher, active.id, key.tenant_id, text))
    return ids, values


async def seal_plain(
    db: Database, keyring: Keyring, *, batch: int = 500, max_batches: int | None = None
) -> dict[str, Any]:
    """`threadline keys seal`: seal the content written before encryption was turned on (or by a writer that
    stores it plain), table by table in keyset batches, resumable like the rotation. The full-text vectors stay
    (the trigger keeps a sealed row's vector, computed from this same text when it was written)."""
    state = await repo.rotation(db, "seal")
    if state is None or state["finished_at"] is not None:
        await repo.start_rotation(db, keyring.masters.current.key_id, False, "seal", "seal")
        state = await repo.rotation(db, "seal")
        assert state is not None
    position: dict[str, Any] = state["position"] or {"table": 0, "after": str(_ZERO)}
    phase: str = state["phase"]
    batches = 0
    while phase == "seal" and (max_batches is None or batches < max_batches):
        table, column = repo.SEALED_COLUMNS[int(position["table"])]
        async with db.transaction() as tx:
            rows = await repo.plain_batch(tx, table, column, uuid.UUID(position["after"]), batch)
            values = [await keyring.seal(r["tenant_id"], r["value"], r["user_id"]) for r in rows]
            if rows:
                await repo.reseal(tx, table, column, [r["id"] for r in rows], values)
                position = {"table": position["table"], "after": str(rows[-1]["id"])}
            elif int(position["table"]) + 1 < len(repo.SEALED_COLUMNS):
                position = {"table": int(position["table"]) + 1, "after": str(_ZERO)}
            else:
                phase, position = "json", {"table": 0, "after": str(_ZERO)}
            await repo.note_rotation(tx, phase, position, rows=len(rows), job="seal")
        batches += 1
    while phase == "json" and (max_batches is None or batches < max_batches):
        # Content parts (their text, tool arguments and results) and imports' attachment entries.
        table, column = repo.JSON_SEALED[int(position["table"])]
        async with db.transaction() as tx:
            rows = await repo.json_batch(tx, table, column, uuid.UUID(position["after"]), batch)
            ids: list[uuid.UUID] = []
            texts: list[str] = []
            for row in rows:
                value = orjson.loads(row["raw"])
                stored: Any = (
                    await seal_parts(row["tenant_id"], value, row["user_id"], skip_sealed=True)
                    if table == "message"
                    else await seal_attachment(row["tenant_id"], value, skip_sealed=True)
                )
                if stored != value:
                    ids.append(row["id"])
                    texts.append(orjson.dumps(stored).decode())
            if ids:
                await repo.set_json(tx, table, column, ids, texts)
            if rows:
                position = {"table": position["table"], "after": str(rows[-1]["id"])}
            elif int(position["table"]) + 1 < len(repo.JSON_SEALED):
                position = {"table": int(position["table"]) + 1, "after": str(_ZERO)}
            else:
                phase, position = "events", {"after": 0}
            await repo.note_rotation(tx, phase, position, rows=len(ids), job="seal")
        batches += 1
    while phase == "events" and (max_batches is None or batches < max_batches):
        # The event log: payloads carrying text (snapshots, deltas) sealed as publish() seals new ones.
        async with db.transaction() as tx:
            events = await repo.events_batch(tx, int(position["after"]), batch)
            changed: list[tuple[int, dict[str, Any]]] = []
            for event in events:
                payload = orjson.loads(event["raw"])
                if isinstance(payload, dict):
                    sealed = await seal_event_payload(event["tenant_id"], payload)
                    if sealed != payload:
                        changed.append((event["id"], sealed))
            if changed:
                await repo.set_payloads(
                    tx, [i for i, _ in changed], [orjson.dumps(p).decode() for _, p in changed]
                )
            if events:
                position = {"after": events[-1]["id"]}
            else:
                phase, position = "done", {}
            await repo.note_rotation(tx, phase, position, rows=len(changed), job="seal")
        batches += 1
    final = await repo.rotation(db, "seal")
    assert final is not None
    return {
        "finished": final["phase"] == "done",
        "rowsSealed": final["rows_done"],
        "position": final["position"],
    }


async def shred(
    keyring: Keyring | None, db: Database, tenant_id: uuid.UUID, user_id: uuid.UUID | None
) -> int:
    """Erase a user's data keys (or all of a tenant's): what they sealed reads as unavailable from now on, in
    this process at once and in others within `key_cache_seconds`. The number of keys erased."""
    ids = await repo.shred(db, tenant_id, user_id)
    if keyring is not None:
        keyring.forget(ids)
    return len(ids)
