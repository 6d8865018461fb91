"""What a process checks before it serves a database that may hold sealed content."""

from __future__ import annotations

from threadline.crypto import repository as repo
from threadline.crypto.keyring import Keyring, key_context
from threadline.db import Executor


class KeyConfigurationError(RuntimeError):
    """The configured master keys cannot read this database's content: the process must not start."""


async def check(db: Executor, keyring: Keyring | None) -> None:
    """Refuse to start without a master key over a database with data keys (content would read as ciphertext,
    and new content would be stored in the clear beside it), or with master keys that unwrap none of them."""
    masters = await repo.masters_in_use(db)
    if keyring is None:
        if masters:
            raise KeyConfigurationError(
                "This database holds encrypted content but no master key is configured: set "
                "THREADLINE_MASTER_KEY or THREADLINE_MASTER_KEY_FILE (the key its data keys were wrapped with)."
            )
        return
    unknown = sorted(m for m in masters if keyring.masters.by_id(m) is None)
    if unknown:
        raise KeyConfigurationError(
            f"Data keys of this database are wrapped by master key(s) {', '.join(unknown)}, which are not "
            "configured: set THREADLINE_MASTER_KEY to the right key (earlier keys in THREADLINE_MASTER_KEYS_PREVIOUS "
            "while `threadline keys rotate` runs)."
        )
    row = await repo.any_key(db)
    if row is not None:
        master = keyring.masters.by_id(row["master_key_id"])
        assert master is not None
        try:
            master.unwrap(bytes(row["wrapped"]), key_context(row["id"], row["tenant_id"], row["user_id"]))
        except Exception as exc:
            raise KeyConfigurationError(
                f"The master key does not unwrap data key {row['id']}: {exc!r}"
            ) from exc


async def require_keys(db: Executor) -> None:
    """`check` with this process's keyring: the commands that read or write content (tiers, PII backfill, export)
    call it before their first statement, as `serve`, `worker` and `import` do (KeyConfigurationError if not)."""
    from threadline import crypto

    await check(db, crypto.active())
