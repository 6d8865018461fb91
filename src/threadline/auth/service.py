"""Authentication, tenant bootstrap and the admin operations on users and keys."""

from __future__ import annotations

import functools
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import asyncpg

from threadline.audit.service import AuditAction, record
from threadline.auth import live
from threadline.auth import repository as repo
from threadline.auth.principal import Principal, Role
from threadline.auth.tokens import (
    JwtClaims,
    decode_jwt,
    hash_api_key,
    hash_subject,
    new_api_key,
    tenant_secrets,
    unauthenticated,
)
from threadline.db import Database, Executor
from threadline.errors import bad_input, conflict, forbidden, not_found
from threadline.ids import Kind, encode_id
from threadline.settings import Settings

# Live (unrevoked) API keys a user may hold. Also bounds the work of a revocation, which walks the live keys a
# key minted (revoke_api_key).
MAX_LIVE_KEYS_PER_USER = 100


@dataclass(frozen=True)
class TenantBootstrap:
    tenant_id: uuid.UUID
    user_id: uuid.UUID
    api_key: str


async def authenticate(db: Executor, settings: Settings, authorization: str | None) -> Principal:
    """The principal behind an `Authorization: Bearer ...` value; UNAUTHENTICATED otherwise."""
    if not authorization:
        raise unauthenticated("Missing credentials: send Authorization: Bearer <api key or JWT>")
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise unauthenticated("Malformed Authorization header: expected 'Bearer <token>'")
    if token.count(".") == 2:
        claims = decode_jwt(
            token,
            settings.jwt_secret,
            settings.jwt_issuer,
            settings.jwt_audience,
            _tenant_secrets(settings.jwt_tenant_secrets),
        )
        user = await _subject_user(db, claims)
        return Principal(
            user["tenant_id"], user["id"], Role(user["role"]), user["team"], user.get("pii_policy") or "OFF"
        )
    if len(token) > 200:
        raise unauthenticated()
    row = await repo.principal_by_key_hash(db, hash_api_key(token))
    if row is None:
        raise unauthenticated("Invalid API key")
    return Principal(
        row["tenant_id"],
        row["user_id"],
        Role(row["role"]),
        row["team"],
        row["pii_policy"] or "OFF",
        key_id=row["key_id"],
    )


@functools.lru_cache(maxsize=4)
def _tenant_secrets(pairs: tuple[tuple[str, str], ...]) -> dict[uuid.UUID, str]:
    return tenant_secrets(pairs)


async def _subject_user(db: Executor, claims: JwtClaims) -> asyncpg.Record:
    """The user of a JWT subject. The token's role is used once, to provision the user on first sight; after
    that the stored role wins (an admin changes it with userRoleSet; an old ADMIN token does not re-promote a
    demoted user). An erased subject stays erased: its tokens are UNAUTHENTICATED, not a new user."""
    user = await repo.subject_user(db, claims.tenant_id, claims.subject)
    if user is not None:
        return user
    if not await repo.tenant_exists(db, claims.tenant_id):
        raise unauthenticated("Invalid token: unknown tenant")
    subject_hash = hash_subject(claims.subject)
    await repo.insert_subject_user(db, claims.tenant_id, claims.subject, subject_hash, claims.role)
    # Read back, also when provisioned concurrently: the row carries the tenant's PII policy too.
    user = await repo.subject_user(db, claims.tenant_id, claims.subject)
    if user is None:
        if await repo.subject_erased(db, claims.tenant_id, subject_hash):
            raise unauthenticated("Invalid token: this user was erased")
        raise unauthenticated("Invalid token: unknown subject")
    return user


async def create_tenant(db: Database, name: str, admin_email: str) -> TenantBootstrap:
    name = name.strip()
    if not name or len(name) > 200:
        raise bad_input("Tenant name must be 1 to 200 characters")
    email = _normalise_email(admin_email)
    plaintext, key_hash, prefix = new_api_key()
    async with db.transaction() as tx:
        tenant = await repo.insert_tenant(tx, name)
        user = await repo.insert_user(
            tx, tenant["id"], email=email, display_name=email.split("@")[0], role=Role.ADMIN, team=None
        )
        await repo.insert_api_key(tx, tenant["id"], user["id"], "bootstrap", key_hash, prefix)
    return TenantBootstrap(tenant["id"], user["id"], plaintext)


def _normalise_email(email: str) -> str:
    email = email.strip().lower()
    if len(email) > 320 or "@" not in email or email.startswith("@") or email.endswith("@"):
        raise bad_input(f"Invalid email address {email[:80]!r}", argument="email")
    return email


def _require_admin(principal: Principal) -> None:
    if not principal.is_admin:
        raise forbidden("Only tenant admins may manage users and API keys")


async def create_user(
    db: Database,
    principal: Principal,
    *,
    email: str,
    display_name: str | None,
    role: Role,
    team: str | None,
) -> asyncpg.Record:
    _require_admin(principal)
    email = _normalise_email(email)
    display = (display_name or email.split("@")[0]).strip()
    if len(display) > 200:
        raise bad_input("displayName is limited to 200 characters", argument="displayName")
    team = team.strip() if team else None
    if team is not None and not 1 <= len(team) <= 100:
        raise bad_input("team must be 1 to 100 characters", argument="team")
    try:
        async with db.transaction() as tx:
            row = await repo.insert_user(
                tx, principal.tenant_id, email=email, display_name=display, role=role, team=team
            )
            await record(tx, principal, AuditAction.USER_CREATE, (Kind.USER, row["id"]), {"role": role.value})
            return row
    except asyncpg.UniqueViolationError as exc:
        raise conflict(f"A user with email {email!r} already exists") from exc


async def create_api_key(
    db: Database, principal: Principal, user_id: uuid.UUID, name: str
) -> tuple[asyncpg.Record, str]:
    """Admins create keys for any user of their tenant; anyone may create keys for themself.

    A key minted by a caller authenticated with an API key records that key (`created_by_key`): revoking it
    revokes this one too (revoke_api_key), so a leaked key cannot leave behind keys that outlive its revocation.
    The parent key's row is held while the new key is inserted, so a revocation racing this either sees the new
    key or is seen by it (then the caller is UNAUTHENTICATED). A user holds at most MAX_LIVE_KEYS_PER_USER live
    keys, which bounds what a revocation walks."""
    # Existence first: another tenant's user is NOT_FOUND for every caller, never FORBIDDEN.
    if await repo.user_by_id(db, principal.tenant_id, user_id) is None:
        raise not_found("User")
    if user_id != principal.user_id:
        _require_admin(principal)
    if len(name) > 200:
        raise bad_input("API key name is limited to 200 characters", argument="name")
    plaintext, key_hash, prefix = new_api_key()
    async with db.transaction() as tx:
        if principal.key_id is not None and not await repo.lock_live_api_key(
            tx, principal.tenant_id, principal.key_id
        ):
            raise unauthenticated("Invalid API key")
        live_keys = await repo.lock_user_keys(tx, principal.tenant_id, user_id)
        if live_keys is None:
            raise not_found("User")
        if live_keys >= MAX_LIVE_KEYS_PER_USER:
            raise conflict(
                f"A user may hold at most {MAX_LIVE_KEYS_PER_USER} live API keys: revoke one first"
            )
        row = await repo.insert_api_key(
            tx, principal.tenant_id, user_id, name.strip(), key_hash, prefix, principal.key_id
        )
        details: dict[str, object] = {"prefix": prefix, "forSelf": user_id == principal.user_id}
        if principal.key_id is not None:
            details["createdByKey"] = encode_id(Kind.API_KEY, principal.key_id)
        await record(tx, principal, AuditAction.API_KEY_CREATE, (Kind.API_KEY, row["id"]), details)
    return row, plaintext


async def revoke_api_key(db: Database, principal: Principal, key_id: uuid.UUID) -> asyncpg.Record:
    """Anyone revokes their own keys (a leaked key must not wait for an admin); admins any key of their
    tenant. Another user's key is NOT_FOUND to a non-admin, as for reading it (readable_api_key).

    Every live key the key minted is revoked with it, transitively, in the same transaction: each audited as
    `api_key.revoke` with `details.cascadedFrom`, and the open sockets of each affected user re-check their
    credential (auth.live), as for the key itself. The walk is bounded by the live keys of the tenant's users
    (MAX_LIVE_KEYS_PER_USER each)."""
    await readable_api_key(db, principal, key_id)
    async with db.transaction() as tx:
        row = await repo.revoke_api_key(tx, principal.tenant_id, key_id)
        if row is None:
            raise not_found("ApiKey")
        details = {"prefix": row["prefix"]}
        await record(tx, principal, AuditAction.API_KEY_REVOKE, (Kind.API_KEY, key_id), details)
        users = {row["user_id"]}
        revoked = [key_id]
        cascaded_from = encode_id(Kind.API_KEY, key_id)
        # Repeated until nothing more is found: a key minted under one of them and committed while a pass ran
        # (its creation held that parent's row) is found by the next pass; none is minted after it.
        while minted := await repo.revoke_minted_keys(tx, principal.tenant_id, revoked):
            for child in minted:
                revoked.append(child["id"])
                users.add(child["user_id"])
                child_details = {"prefix": child["prefix"], "cascadedFrom": cascaded_from}
                await record(
                    tx, principal, AuditAction.API_KEY_REVOKE, (Kind.API_KEY, child["id"]), child_details
                )
        for user in sorted(users):
            await live.principal_changed(tx, principal.tenant_id, user, "revoked")
    live.committed()
    return row


async def set_user_role(db: Database, principal: Principal, user_id: uuid.UUID, role: Role) -> asyncpg.Record:
    """Admins change a user's tenant role; it takes effect at once, on open sockets too (auth.live). An admin
    cannot change their own role (a tenant must not lose its last admin by accident)."""
    async with db.transaction() as tx:
        # Existence first: another tenant's user is NOT_FOUND for every caller, never FORBIDDEN.
        before = await repo.user_by_id(tx, principal.tenant_id, user_id)
        if before is None:
            raise not_found("User")
        _require_admin(principal)
        if user_id == principal.user_id:
            raise forbidden("Admins cannot change their own role; ask another admin")
        row = await repo.set_user_role(tx, principal.tenant_id, user_id, role.value)
        if row is None:
            raise not_found("User")
        if before["role"] != row["role"]:
            details = {"from": before["role"], "to": row["role"]}
            await record(tx, principal, AuditAction.USER_ROLE_SET, (Kind.USER, user_id), details)
            await live.principal_changed(tx, principal.tenant_id, user_id, "role")
    live.committed()
    return row


async def readable_api_key(db: Executor, principal: Principal, key_id: uuid.UUID) -> asyncpg.Record:
    """An API key (never its secret), for its user and for tenant admins; NOT_FOUND for anyone else."""
    row = await repo.api_key_by_id(db, principal.tenant_id, key_id)
    if row is None or (row["user_id"] != principal.user_id and not principal.is_admin):
        raise not_found("ApiKey")
    return row


def visible_api_key(principal: Principal, row: asyncpg.Record | None) -> asyncpg.Record | None:
    """readable_api_key's rule on a loaded row: the row, or None where it is NOT_FOUND (gone, or another user's
    key to a non-admin)."""
    if row is None or (row["user_id"] != principal.user_id and not principal.is_admin):
        return None
    return row


async def minted_api_keys(
    db: Executor, principal: Principal, key_id: uuid.UUID, limit: int, after: tuple[object, ...] | None
) -> tuple[list[asyncpg.Record], uuid.UUID | None]:
    """The keys `key_id` (readable by the caller) minted, oldest first: all of them for an admin, the caller's
    own for anyone else. With whose keys they are limited to (None: everyone's), for `totalCount`
    (auth.loaders.minted_count)."""
    only = None if principal.is_admin else principal.user_id
    return await repo.minted_api_keys(db, principal.tenant_id, key_id, only, limit, after), only


async def user_api_keys(
    db: Executor, principal: Principal, user_id: uuid.UUID, limit: int, after: tuple[object, ...] | None
) -> tuple[list[asyncpg.Record], Callable[[], Awaitable[int]]] | None:
    """A user's API keys (never their secrets), oldest first, for the user and tenant admins; None for anyone
    else. With a count of them, for `totalCount`."""
    if user_id != principal.user_id and not principal.is_admin:
        return None
    rows = await repo.user_api_keys(db, principal.tenant_id, user_id, limit, after)
    return rows, lambda: repo.count_user_api_keys(db, principal.tenant_id, user_id)
