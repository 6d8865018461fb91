"""Which rows make up a conversation's cold document, read from the schema's foreign keys, and the SQL
that moves them into a document and back.

The document holds every row that hangs off the conversation's messages, threads and runs, found by
following foreign keys from those three tables (edits, chunks, parts' files, attachments, feedback,
bookmarks, current leaves, read markers, run steps, and any table added later that references them):
nothing keyed by a message can be left behind or silently cascaded away. What stays hot is the
conversation row (metadata, counts, title search) and what is about the conversation rather than its
content (participants, invites, folders, pins, links, import identities).

A conversation stays hot while anything outside the document refers into it (another conversation forked
from one of its messages, a share link, which is read without a caller) or while a run is not finished.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import asyncpg

from threadline.db import Executor
from threadline.tiers import repository as repo

ROOTS = ("message", "thread", "run")
# Tables never moved into a document, even if they reference a moved one.
HOT = frozenset({"conversation", "share_link", "tenant", "app_user"})
# Columns derived on insert by a trigger (full-text vectors): not stored, rebuilt on restore.
DERIVED_TYPES = frozenset({"tsvector"})
# Tables derived from messages and rebuilt when they come back (the message insert trigger queues them for the
# embedding indexer again): deleted with the messages, never stored (vectors compress badly and can be redone).
DERIVED_TABLES = frozenset({"message_embedding", "embedding_queue"})
FINISHED_RUNS = "('COMPLETED', 'CANCELLED', 'FAILED', 'EXPIRED', 'INCOMPLETE')"


@dataclass(frozen=True)
class ForeignKey:
    table: str
    column: str
    ref: str
    ref_column: str
    on_delete: str  # pg_constraint.confdeltype: a no action, r restrict, c cascade, n set null, d default


@dataclass
class TablePlan:
    name: str
    member: str  # a predicate on alias t: the row belongs to conversation $2 of tenant $1
    columns: list[str] = field(default_factory=list)
    excluded: list[str] = field(default_factory=list)
    identity: bool = False
    derived: bool = False  # in DERIVED_TABLES: deleted, not stored
    outside: list[ForeignKey] = field(default_factory=list)  # references to rows outside the document

    def dump_sql(self) -> str:
        return (
            "SELECT count(*) AS rows, coalesce(sum(pg_column_size(t.*)), 0)::bigint AS bytes,"
            " coalesce(jsonb_agg(to_jsonb(t) - $3::text[]), '[]'::jsonb)::text AS json"
            f' FROM "{self.name}" t WHERE {self.member}'
        )

    def delete_sql(self) -> str:
        return f'DELETE FROM "{self.name}" t WHERE {self.member}'

    def insert_sql(self, present: set[str]) -> str:
        """Rows back from their JSON ($1), columns `present` in the document (a column added since takes its
        default). A reference to something outside the document that went meanwhile (an upload deleted, a
        user erased) follows its foreign key's rule: the row goes (cascade) or the reference is cleared (set
        null), as it would have had the row stayed hot."""
        columns = [c for c in self.columns if c in present]
        values = []
        conditions = []
        for column in columns:
            fk = next((f for f in self.outside if f.column == column), None)
            if fk is not None and fk.on_delete == "n":
                values.append(
                    f'CASE WHEN EXISTS (SELECT 1 FROM "{fk.ref}" x WHERE x."{fk.ref_column}" = r."{column}")'
                    f' THEN r."{column}" END'
                )
            else:
                values.append(f'r."{column}"')
                if fk is not None:
                    conditions.append(
                        f'(r."{column}" IS NULL OR EXISTS (SELECT 1 FROM "{fk.ref}" x'
                        f' WHERE x."{fk.ref_column}" = r."{column}"))'
                    )
        names = ", ".join(f'"{c}"' for c in columns)
        where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
        overriding = " OVERRIDING SYSTEM VALUE" if self.identity else ""
        return (
            f'INSERT INTO "{self.name}" ({names}){overriding} SELECT {", ".join(values)}'
            f' FROM jsonb_populate_recordset(NULL::"{self.name}", $1::text::jsonb) r{where}'
            " ON CONFLICT DO NOTHING"
        )


@dataclass
class Plan:
    tables: list[TablePlan]  # parents before children
    blocked_sql: str
    user_columns: dict[str, list[str]]  # table -> columns naming a user
    # (table, column, outside table, its key, its user column): users named through a referenced row (uploads)
    indirect_users: list[tuple[str, str, str, str, str]]


def build(keys: list[ForeignKey], columns: list[asyncpg.Record]) -> Plan:
    by_table: dict[str, list[ForeignKey]] = {}
    for fk in keys:
        by_table.setdefault(fk.table, []).append(fk)
    parent_of: dict[str, ForeignKey | None] = {name: None for name in ROOTS}
    grew = True
    while grew:
        grew = False
        for table in sorted(by_table):
            if table in parent_of or table in HOT:
                continue
            parent = next((fk for fk in by_table[table] if fk.ref in parent_of and fk.ref != table), None)
            if parent is not None:
                parent_of[table] = parent
                grew = True
    moved = list(parent_of)
    member = {name: _member(name, parent_of, "t") for name in moved}
    ordered = _parents_first(moved, by_table)
    cols: dict[str, list[asyncpg.Record]] = {}
    for c in columns:
        cols.setdefault(c["tbl"], []).append(c)
    plans = []
    user_columns: dict[str, list[str]] = {}
    indirect: list[tuple[str, str, str, str, str]] = []
    for name in ordered:
        described = cols.get(name, [])
        excluded = [c["col"] for c in described if c["generated"] or c["type"] in DERIVED_TYPES]
        outside = [fk for fk in by_table.get(name, []) if fk.ref not in member]
        plans.append(
            TablePlan(
                name=name,
                member=member[name],
                columns=[c["col"] for c in described if c["col"] not in excluded],
                excluded=excluded,
                identity=any(c["identity"] for c in described),
                derived=name in DERIVED_TABLES,
                outside=outside,
            )
        )
        user_columns[name] = [fk.column for fk in outside if fk.ref == "app_user"]
        for fk in outside:
            if fk.ref in HOT or fk.ref == "conversation":
                continue
            indirect.extend(
                (name, fk.column, fk.ref, fk.ref_column, u.column)
                for u in by_table.get(fk.ref, [])
                if u.ref == "app_user"
            )
    # Referenced from outside the document: keeping the reference needs the row hot.
    into = [
        f'EXISTS (SELECT 1 FROM "{fk.table}" o WHERE o."{fk.column}" IN'
        f' (SELECT t."{fk.ref_column}" FROM "{fk.ref}" t WHERE {member[fk.ref]}))'
        for fk in keys
        if fk.ref in member and fk.table not in member
    ]
    into.append("EXISTS (SELECT 1 FROM share_link s WHERE s.tenant_id = $1 AND s.conversation_id = $2)")
    into.append(
        "EXISTS (SELECT 1 FROM run t WHERE t.tenant_id = $1 AND t.conversation_id = $2"
        f" AND t.status NOT IN {FINISHED_RUNS})"
    )
    return Plan(plans, "SELECT " + " OR ".join(into), user_columns, indirect)


def _member(table: str, parent_of: dict[str, ForeignKey | None], alias: str) -> str:
    """A predicate on `alias`: the row of `table` belongs to conversation $2 of tenant $1."""
    fk = parent_of[table]
    if fk is None:
        return f"{alias}.tenant_id = $1 AND {alias}.conversation_id = $2"
    inner = alias + "p"
    return (
        f'{alias}."{fk.column}" IN (SELECT {inner}."{fk.ref_column}" FROM "{fk.ref}" {inner}'
        f" WHERE {_member(fk.ref, parent_of, inner)})"
    )


def _parents_first(tables: list[str], by_table: dict[str, list[ForeignKey]]) -> list[str]:
    placed: list[str] = []
    pending = list(tables)
    while pending:
        for name in pending:
            parents = {fk.ref for fk in by_table.get(name, []) if fk.ref in tables and fk.ref != name}
            if parents <= set(placed):
                placed.append(name)
                pending.remove(name)
                break
        else:  # a cycle between moved tables: keep the discovery order for the rest
            placed.extend(pending)
            break
    return placed


async def read_plan(db: Executor) -> Plan:
    """The plan for the schema as it is now (read each pass: migrations may have added tables)."""
    keys = [
        ForeignKey(r["tbl"], r["col"], r["ref"], r["ref_col"], r["on_delete"])
        for r in await repo.foreign_keys(db)
    ]
    tables = sorted({k.table for k in keys} | set(ROOTS))
    return build(keys, await repo.table_columns(db, tables))
