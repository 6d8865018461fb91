"""All SQL of conversations, participants and invites. Tenant first in every signature."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from threadline import crypto
from threadline.auth.principal import Principal
from threadline.conversations.access_rule import reach
from threadline.db import Executor
from threadline.db.repository import older_than
from threadline.metadata.repository import conversations_holding
from threadline.metadata.rules import MetadataFilter

# The conversation's own columns, then what each row computes (`cold`): a statement that picks its rows first
# (the pinned-first page) carries the first through and computes the rest for the rows it keeps.
_STORED_COLUMNS = """c.id, c.tenant_id, c.owner_id, c.title, c.description, c.tags, c.status,
    c.session_id, c.ai_provider, c.model, c.max_history_messages, c.message_count, c.token_count,
    c.created_at, c.updated_at, c.last_activity_at, c.metadata, c.forked_from_conversation_id,
    c.forked_from_message_id"""
CONVERSATION_COLUMNS = (
    _STORED_COLUMNS
    + """,
    EXISTS (SELECT 1 FROM conversation_tier k
            WHERE k.conversation_id = c.id AND k.tenant_id = c.tenant_id AND k.document IS NOT NULL OFFSET 0) AS cold"""
)
# `cold`: the conversation's content is in a cold document (tiers/); reading it brings it back first. One lookup
# of conversation_tier's primary key per row, in the row's tenant. `OFFSET 0` keeps it so: without it the planner
# may instead hash every tenant's cold rows once per statement (a hashed SubPlan: a scan of the whole table, the
# tenant condition only part of the hash key), for a statement that returns more rows than there are cold
# conversations in all tenants.

PARTICIPANT_COLUMNS = "id, tenant_id, conversation_id, user_id, role, joined_at"
INVITE_COLUMNS = "id, tenant_id, conversation_id, user_id, inviter_id, role, status, created_at, accepted_at"
# Where a conversation sorts with `pinnedFirst`: its pin position, unpinned ones after every pin.
UNPINNED_RANK = 2**31 - 1
PIN_RANK = f"COALESCE(pn.position, {UNPINNED_RANK})"


# The full-text vector of a conversation whose title or description is sealed (THREADLINE_ENCRYPT_TITLES, crypto/):
# computed by the writing statement from the plaintext parameters, as the trigger would from the columns.
LABEL_VECTOR = """setweight(threadline_search_vector(threadline_search_config({t}), {label}::text), 'A')
    || setweight(threadline_search_vector(threadline_search_config({t}), coalesce({description}::text, '')), 'B')"""


async def sealed_labels(
    db: Executor, tenant_id: uuid.UUID, conversation_id: uuid.UUID | None, changes: dict[str, Any]
) -> tuple[dict[str, Any], tuple[str, str] | None]:
    """`changes` with the title and description sealed when titles are (crypto/), and the plaintext label (title
    and tags) and description the vector is computed from; (changes, None) otherwise."""
    if not crypto.sealing_titles() or not {"title", "description", "tags"} & changes.keys():
        return changes, None
    current: Any = {}
    if conversation_id is not None and not {"title", "description", "tags"} <= changes.keys():
        current = (
            await db.fetchrow(
                "SELECT title, description, tags FROM conversation WHERE tenant_id = $1 AND id = $2",
                tenant_id,
                conversation_id,
            )
            or {}
        )

    def now(key: str) -> Any:
        return changes[key] if key in changes else current.get(key)

    out = dict(changes)
    for key in ("title", "description"):
        if changes.get(key):
            out[key] = await crypto.seal_title(tenant_id, changes[key])
    label = (now("title") or "") + " " + " ".join(now("tags") or [])
    return out, (label, now("description") or "")


async def insert_conversation(
    db: Executor, tenant_id: uuid.UUID, owner_id: uuid.UUID, **f: Any
) -> asyncpg.Record:
    stored, vector = await sealed_labels(
        db, tenant_id, None, {"title": f["title"], "description": f["description"], "tags": f["tags"]}
    )
    row = await db.fetchrow(
        f"""INSERT INTO conversation AS c (id, tenant_id, owner_id, title, description, tags, status,
                session_id, ai_provider, model, max_history_messages, message_count, token_count, title_source,
                search_vector)
            VALUES ($1, $2, $3, $4, $5, $6, 'ACTIVE', $7, $8, $9, $10, 0, 0, $11,
                    CASE WHEN $12::text IS NOT NULL THEN {LABEL_VECTOR.format(t="$2", label="$12", description="$13")}
                    END)
            RETURNING {CONVERSATION_COLUMNS}""",
        uuid.uuid4(),
        tenant_id,
        owner_id,
        stored["title"],
        stored["description"],
        f["tags"],
        f["session_id"],
        f["ai_provider"],
        f["model"],
        f["max_history_messages"],
        f.get("title_source", "USER"),
        vector[0] if vector else None,
        vector[1] if vector else None,
    )
    assert row is not None
    return row


async def conversation_with_access(
    db: Executor, tenant_id: uuid.UUID, conversation_id: uuid.UUID, user_id: uuid.UUID, *, lock: bool = False
) -> asyncpg.Record | None:
    """The conversation, the caller's participant role (or NULL) and the owner's team, in one statement."""
    return await db.fetchrow(
        f"""SELECT {CONVERSATION_COLUMNS}, p.role AS viewer_role, ou.team AS owner_team
            FROM conversation c
            LEFT JOIN participant p ON p.conversation_id = c.id AND p.user_id = $3
            LEFT JOIN app_user ou ON ou.id = c.owner_id
            WHERE c.tenant_id = $1 AND c.id = $2
            {"FOR UPDATE OF c" if lock else ""}""",
        tenant_id,
        conversation_id,
        user_id,
    )


async def conversations_with_access(
    db: Executor, tenant_id: uuid.UUID, ids: list[uuid.UUID], user_id: uuid.UUID, *, lock: bool = False
) -> list[asyncpg.Record]:
    """Conversations with the caller's role and the owner's team; with `lock`, row-locked in id order (so
    concurrent batch writers cannot deadlock)."""
    locking = " ORDER BY c.id FOR UPDATE OF c" if lock else ""
    return await db.fetch(
        f"""SELECT {CONVERSATION_COLUMNS}, p.role AS viewer_role, ou.team AS owner_team
            FROM conversation c
            LEFT JOIN participant p ON p.conversation_id = c.id AND p.user_id = $3
            LEFT JOIN app_user ou ON ou.id = c.owner_id
            WHERE c.tenant_id = $1 AND c.id = ANY($2::uuid[]){locking}""",
        tenant_id,
        ids,
        user_id,
    )


def visibility_sql(principal: Principal, params: list[Any], alias: str = "c") -> str:
    """A WHERE fragment limiting `alias` to conversations `principal` may read; appends to `params`.

    The SQL form of `access_rule` ("access >= READ"), from the same `reach`. The tenant filter is always
    part of it, so no caller can forget it.
    """
    params.append(principal.tenant_id)
    tenant_param = f"${len(params)}"
    tenant = f"{alias}.tenant_id = {tenant_param}"
    scope = reach(principal)
    if scope.whole_tenant:
        return tenant
    params.append(principal.user_id)
    # Any participant row: every participant role grants at least READ (access_rule.PARTICIPANT_ACCESS).
    member = f"{alias}.id IN (SELECT conversation_id FROM participant WHERE user_id = ${len(params)})"
    if scope.team is not None:
        params.append(scope.team)
        team = f"{alias}.owner_id IN (SELECT id FROM app_user WHERE tenant_id = {tenant_param} AND team = ${len(params)})"
        return f"{tenant} AND ({member} OR {team})"
    return f"{tenant} AND {member}"


def _list_filters(
    principal: Principal,
    status: str | None,
    tags: list[str] | None,
    params: list[Any],
    metadata: MetadataFilter | None = None,
    folder_id: uuid.UUID | None = None,
    unfiled: bool = False,
) -> str:
    where = [visibility_sql(principal, params)]
    if folder_id is not None:
        # The caller's own placement (organise/): each user files conversations in folders of their own.
        params.extend([folder_id, principal.user_id])
        where.append(
            f"c.id IN (SELECT conversation_id FROM conversation_folder WHERE folder_id = ${len(params) - 1}"
            f" AND user_id = ${len(params)})"
        )
    if unfiled:
        params.append(principal.user_id)
        where.append(
            f"c.id NOT IN (SELECT conversation_id FROM conversation_folder WHERE user_id = ${len(params)})"
        )
    if metadata:
        # `@>` on the partial GIN index (jsonb_path_ops): the rows holding every pair, without a scan.
        where.append(
            conversations_holding("c", params, principal.tenant_id, metadata.pairs, few=metadata.few)
        )
    if status is not None:
        params.append(status)
        where.append(f"c.status = ${len(params)}")
    if tags:
        params.append(tags)
        where.append(f"c.tags @> ${len(params)}::varchar[]")
    return " AND ".join(where)


@dataclass(frozen=True, slots=True)
class PageRelations:
    """What a page of conversations also reads in its statement (`list_conversations(relations=...)`)."""

    owners: bool  # the owners' user rows, in the first row's `page_users`
    members: bool  # `page_participants`: the participants, as `participants_of` returns them
    member_users: bool  # the participants' user rows, in the first row's `page_users`

    @property
    def users(self) -> bool:
        return self.owners or self.member_users


# The relations' rows as the loaders' own statements return them (participants_of: PARTICIPANT_COLUMNS in
# joining order; auth.repository.users_by_ids: USER_COLUMNS), as composite values of the migration's row types:
# each conversation's participants in an array on its row, and the users once per page (decoding a composite
# value costs the driver ~1.4 us; a page of 50 conversations of one member named that member 100 times), in an
# array on the first row only (`page_users`, NULL on the others): the owners' and participants' users that
# exist. Keep the filters in step with those two functions (tests/test_compiled_execution.py compares them).
_PAGE_PARTICIPANT = (
    "ROW(p.id, p.tenant_id, p.conversation_id, p.user_id, p.role::text, p.joined_at)::page_participant"
)
_PAGE_USER = (
    "ROW(u.id, u.tenant_id, u.email::text, u.display_name::text, u.role::text, u.team::text, "
    "u.external_subject::text, u.created_at)::page_user"
)


def _participants_column(relations: PageRelations | None, tenant: str) -> str:
    if relations is None or not relations.members:
        return ""
    return (
        f", ARRAY(SELECT {_PAGE_PARTICIPANT} FROM participant p WHERE p.tenant_id = {tenant}"
        " AND p.conversation_id = c.id ORDER BY p.joined_at, p.id) AS page_participants"
    )


def _with_page_users(page: str, relations: PageRelations | None, tenant: str, order: str) -> str:
    """The page statement `page` (its rows in `order`, over its output columns) with `page_users` on its first
    row when `relations` asks for users; `page` itself otherwise."""
    if relations is None or not relations.users:
        return page
    if relations.member_users and not relations.members:
        raise ValueError("the participants' users come from the participants the page reads")
    sources = []
    if relations.owners:
        sources.append("SELECT owner_id FROM page")
    if relations.member_users:  # the participants the page's rows carry (`members` comes with `member_users`)
        sources.append("SELECT x.user_id FROM page, unnest(page.page_participants) x")
    # `= ANY(ARRAY(...))`, not `IN (...)`: the page's few ids looked up by app_user's primary key. With `IN`
    # the planner expected ~560 ids and read every user of the tenant (a hash join over app_user).
    users = (
        f"ARRAY(SELECT {_PAGE_USER} FROM app_user u WHERE u.tenant_id = {tenant} AND u.id = ANY(ARRAY("
        f"{' UNION '.join(sources)})))"
    )
    return (
        f"WITH page AS ({page}) SELECT page.*, CASE WHEN row_number() OVER (ORDER BY {order}) = 1 "
        f"THEN {users} END AS page_users FROM page ORDER BY {order}"
    )


async def list_conversations(
    db: Executor,
    principal: Principal,
    *,
    status: str | None,
    tags: list[str] | None,
    limit: int,
    after: tuple[datetime, uuid.UUID] | tuple[int, datetime, uuid.UUID] | None,
    metadata: MetadataFilter | None = None,
    folder_id: uuid.UUID | None = None,
    pinned_first: bool = False,
    unfiled: bool = False,
    relations: PageRelations | None = None,
) -> list[asyncpg.Record]:
    """A page, most recent activity first; with `pinned_first`, the caller's pins come first in their pin order
    (each row then has `pin_rank`, and `after` is (pin_rank, last_activity_at, id)). With `relations`, the rows
    also carry their participants and the first row the page's users (`PageRelations`): one round trip."""
    params: list[Any] = []
    where = _list_filters(principal, status, tags, params, metadata, folder_id, unfiled)
    if params[0] != principal.tenant_id:  # visibility_sql binds the tenant first
        raise AssertionError("the tenant is not the first parameter")
    related = _participants_column(relations, "$1")
    if not pinned_first:
        where += older_than("c.last_activity_at, c.id", after, params)
        params.append(limit)
        page = f"""SELECT {CONVERSATION_COLUMNS}{related} FROM conversation c WHERE {where}
                ORDER BY c.last_activity_at DESC, c.id DESC LIMIT ${len(params)}"""
        order = "page.last_activity_at DESC, page.id DESC"
        return await db.fetch(_with_page_users(page, relations, "$1", order), *params)
    page = _pinned_first_page(principal, where, params, after, limit, related)
    order = "page.pin_rank, page.last_activity_at DESC, page.id DESC"
    return await db.fetch(_with_page_users(page, relations, "$1", order), *params)


def _pinned_first_page(
    principal: Principal,
    where: str,
    params: list[Any],
    after: tuple[datetime, uuid.UUID] | tuple[int, datetime, uuid.UUID] | None,
    limit: int,
    related: str,
) -> str:
    """The pinned-first page over the rows `where` admits (binding into `params`): by `PIN_RANK`, then most
    recent activity; `after` is (pin_rank, last_activity_at, id).

    Two parts, each at most a page: the caller's pins (at most THREADLINE_PINS_MAX, read through
    conversation_pin's (user_id, conversation_id)) in pin order, and the unpinned conversations by the ordinary
    page's walk of (tenant_id, last_activity_at DESC, id DESC); then the page of the two. Its per-row columns
    (`cold`, participants) are computed for the page's rows only. Not one LEFT JOIN sorted by the pin rank: that
    sorted every conversation the caller may read (a tenant's 100,000 for an admin) for each page. A cursor in
    the pins continues in the pins after it, then every unpinned row; one in the unpinned part (its rank is
    UNPINNED_RANK) continues there only. Same rows, order and `pin_rank` as that LEFT JOIN
    (tests/test_pinned_first_page.py compares them)."""
    params.append(principal.user_id)
    user = f"${len(params)}"
    pinned_after = unpinned_after = ""
    if after is not None:
        rank = after[0]
        params.extend(after)
        r, t, i = (f"${len(params) - n}" for n in (2, 1, 0))
        pinned_after = (
            f" AND (pn.position > {r} OR (pn.position = {r} AND (c.last_activity_at, c.id) < ({t}, {i})))"
        )
        if rank == UNPINNED_RANK:
            unpinned_after = f" AND (c.last_activity_at, c.id) < ({t}, {i})"
        elif isinstance(rank, int) and rank > UNPINNED_RANK:
            unpinned_after = " AND false"
    params.append(limit)
    n = f"${len(params)}"
    pins = f"""SELECT {_STORED_COLUMNS}, pn.position AS pin_rank
            FROM conversation_pin pn JOIN conversation c ON c.id = pn.conversation_id
            WHERE pn.user_id = {user} AND {where}{pinned_after}
            ORDER BY pn.position, c.last_activity_at DESC, c.id DESC LIMIT {n}"""
    rest = f"""SELECT {_STORED_COLUMNS}, {UNPINNED_RANK} AS pin_rank FROM conversation c
            WHERE {where}
              AND NOT EXISTS (SELECT 1 FROM conversation_pin pn WHERE pn.user_id = {user} AND pn.conversation_id = c.id)
              {unpinned_after}
            ORDER BY c.last_activity_at DESC, c.id DESC LIMIT {n}"""
    return f"""SELECT {CONVERSATION_COLUMNS}, c.pin_rank{related}
            FROM (({pins}) UNION ALL ({rest}) ORDER BY pin_rank, last_activity_at DESC, id DESC LIMIT {n}) c
            ORDER BY c.pin_rank, c.last_activity_at DESC, c.id DESC"""


async def count_conversations(
    db: Executor,
    principal: Principal,
    *,
    status: str | None,
    tags: list[str] | None,
    metadata: MetadataFilter | None = None,
    folder_id: uuid.UUID | None = None,
    unfiled: bool = False,
) -> int:
    params: list[Any] = []
    where = _list_filters(principal, status, tags, params, metadata, folder_id, unfiled)
    return int(await db.fetchval(f"SELECT count(*) FROM conversation c WHERE {where}", *params))


async def update_conversation(
    db: Executor, tenant_id: uuid.UUID, conversation_id: uuid.UUID, changes: dict[str, Any]
) -> asyncpg.Record:
    sets = []
    params: list[Any] = [tenant_id, conversation_id]
    changes, vector = await sealed_labels(db, tenant_id, conversation_id, changes)
    for column, value in changes.items():
        params.append(value)
        sets.append(f"{column} = ${len(params)}")
    if vector is not None:
        params.extend(vector)
        label, description = f"${len(params) - 1}", f"${len(params)}"
        sets.append("search_vector = " + LABEL_VECTOR.format(t="$1", label=label, description=description))
    sets.append("updated_at = now()")
    row = await db.fetchrow(
        f"""UPDATE conversation AS c SET {", ".join(sets)} WHERE c.tenant_id = $1 AND c.id = $2
            RETURNING {CONVERSATION_COLUMNS}""",
        *params,
    )
    assert row is not None
    return row


async def insert_participant(
    db: Executor, tenant_id: uuid.UUID, conversation_id: uuid.UUID, user_id: uuid.UUID, role: str
) -> asyncpg.Record:
    row = await db.fetchrow(
        f"""INSERT INTO participant (id, tenant_id, conversation_id, user_id, role)
            VALUES ($1, $2, $3, $4, $5) RETURNING {PARTICIPANT_COLUMNS}""",
        uuid.uuid4(),
        tenant_id,
        conversation_id,
        user_id,
        role,
    )
    assert row is not None
    return row


async def participants_of(
    db: Executor, tenant_id: uuid.UUID, conversation_ids: list[uuid.UUID]
) -> list[asyncpg.Record]:
    return await db.fetch(
        f"""SELECT {PARTICIPANT_COLUMNS} FROM participant
            WHERE tenant_id = $1 AND conversation_id = ANY($2::uuid[]) ORDER BY joined_at, id""",
        tenant_id,
        conversation_ids,
    )


async def conversations_joined(db: Executor, tenant_id: uuid.UUID, user_id: uuid.UUID) -> set[uuid.UUID]:
    """The conversations the user takes part in (any role): what a viewerEvents subscription starts with."""
    rows = await db.fetch(
        "SELECT conversation_id FROM participant WHERE tenant_id = $1 AND user_id = $2", tenant_id, user_id
    )
    return {r["conversation_id"] for r in rows}


async def participant(
    db: Executor, tenant_id: uuid.UUID, conversation_id: uuid.UUID, user_id: uuid.UUID
) -> asyncpg.Record | None:
    return await db.fetchrow(
        f"""SELECT {PARTICIPANT_COLUMNS} FROM participant
            WHERE tenant_id = $1 AND conversation_id = $2 AND user_id = $3""",
        tenant_id,
        conversation_id,
        user_id,
    )


async def delete_participant(
    db: Executor, tenant_id: uuid.UUID, conversation_id: uuid.UUID, user_id: uuid.UUID
) -> asyncpg.Record | None:
    return await db.fetchrow(
        f"""DELETE FROM participant WHERE tenant_id = $1 AND conversation_id = $2 AND user_id = $3
            RETURNING {PARTICIPANT_COLUMNS}""",
        tenant_id,
        conversation_id,
        user_id,
    )


async def set_participant_role(
    db: Executor, tenant_id: uuid.UUID, conversation_id: uuid.UUID, user_id: uuid.UUID, role: str
) -> asyncpg.Record | None:
    return await db.fetchrow(
        f"""UPDATE participant SET role = $4 WHERE tenant_id = $1 AND conversation_id = $2 AND user_id = $3
            RETURNING {PARTICIPANT_COLUMNS}""",
        tenant_id,
        conversation_id,
        user_id,
        role,
    )


async def insert_invite(
    db: Executor,
    tenant_id: uuid.UUID,
    conversation_id: uuid.UUID,
    user_id: uuid.UUID,
    inviter_id: uuid.UUID,
    role: str,
) -> asyncpg.Record:
    row = await db.fetchrow(
        f"""INSERT INTO invite (id, tenant_id, conversation_id, user_id, inviter_id, role, status)
            VALUES ($1, $2, $3, $4, $5, $6, 'PENDING') RETURNING {INVITE_COLUMNS}""",
        uuid.uuid4(),
        tenant_id,
        conversation_id,
        user_id,
        inviter_id,
        role,
    )
    assert row is not None
    return row


async def pending_invite_for(
    db: Executor, tenant_id: uuid.UUID, conversation_id: uuid.UUID, user_id: uuid.UUID
) -> asyncpg.Record | None:
    return await db.fetchrow(
        f"""SELECT {INVITE_COLUMNS} FROM invite WHERE tenant_id = $1 AND conversation_id = $2
            AND user_id = $3 AND status = 'PENDING'""",
        tenant_id,
        conversation_id,
        user_id,
    )


async def participant_by_id(
    db: Executor, tenant_id: uuid.UUID, participant_id: uuid.UUID
) -> asyncpg.Record | None:
    return await db.fetchrow(
        f"SELECT {PARTICIPANT_COLUMNS} FROM participant WHERE tenant_id = $1 AND id = $2",
        tenant_id,
        participant_id,
    )


async def invite_by_id(db: Executor, tenant_id: uuid.UUID, invite_id: uuid.UUID) -> asyncpg.Record | None:
    return await db.fetchrow(
        f"SELECT {INVITE_COLUMNS} FROM invite WHERE tenant_id = $1 AND id = $2", tenant_id, invite_id
    )


async def invite_for_update(
    db: Executor, tenant_id: uuid.UUID, invite_id: uuid.UUID
) -> asyncpg.Record | None:
    return await db.fetchrow(
        f"SELECT {INVITE_COLUMNS} FROM invite WHERE tenant_id = $1 AND id = $2 FOR UPDATE",
        tenant_id,
        invite_id,
    )


async def mark_invite_accepted(db: Executor, tenant_id: uuid.UUID, invite_id: uuid.UUID) -> None:
    await db.execute(
        "UPDATE invite SET status = 'ACCEPTED', accepted_at = now() WHERE tenant_id = $1 AND id = $2",
        tenant_id,
        invite_id,
    )


async def invites_for_user(db: Executor, tenant_id: uuid.UUID, user_id: uuid.UUID) -> list[asyncpg.Record]:
    return await db.fetch(
        f"""SELECT {INVITE_COLUMNS} FROM invite WHERE tenant_id = $1 AND user_id = $2 AND status = 'PENDING'
            ORDER BY created_at DESC LIMIT 200""",
        tenant_id,
        user_id,
    )


async def touch_activity(
    db: Executor, tenant_id: uuid.UUID, conversation_id: uuid.UUID, messages: int, tokens: int
) -> None:
    """Counters and last activity after new messages (row-locked, so concurrent writers add up)."""
    await db.execute(
        """UPDATE conversation SET message_count = message_count + $3, token_count = token_count + $4,
               last_activity_at = greatest(last_activity_at, now()), updated_at = now()
           WHERE tenant_id = $1 AND id = $2""",
        tenant_id,
        conversation_id,
        messages,
        tokens,
    )


async def set_imported_metadata(
    db: Executor, tenant_id: uuid.UUID, conversation_id: uuid.UUID, metadata: dict[str, str]
) -> None:
    """An import's conversation metadata, written after the insert: `updated_at` stays what the file says
    (`update_conversation` would make it now, so an export imported again would not export the same)."""
    await db.execute(
        "UPDATE conversation SET metadata = $3 WHERE tenant_id = $1 AND id = $2",
        tenant_id,
        conversation_id,
        metadata,
    )
