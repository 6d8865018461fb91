"""Request-wide loaders of run data (graphql/loaders.py): the messages runs answer and write, and run
steps, each in one statement per response. Rows come back as stored; `runs/types.py` builds the objects."""

from __future__ import annotations

import uuid
from datetime import datetime

import asyncpg

from threadline.graphql.context import Info
from threadline.graphql.loaders import counting_loader, grouped_loader, single_loader
from threadline.runs import output_repository as streams
from threadline.runs import repository as repo
from threadline.threads.service import path_ids


async def message(info: Info, message_id: uuid.UUID) -> tuple[asyncpg.Record, list[uuid.UUID]] | None:
    """A message by id with its ancestor ids (the ancestors of every message loaded in one statement)."""

    async def fetch(ids: list[uuid.UUID]) -> list[tuple[asyncpg.Record, list[uuid.UUID]]]:
        principal = await info.context.principal()
        db = info.context.db
        rows = await streams.messages_by_ids(db, principal.tenant_id, ids)
        return list(zip(rows, await path_ids(db, principal.tenant_id, rows), strict=True))

    loader = single_loader(info, "run-messages", fetch, key=lambda pair: pair[0]["id"])
    return await loader.load(message_id)


async def steps(
    info: Info, run_id: uuid.UUID, limit: int, after: tuple[datetime, uuid.UUID] | None
) -> list[asyncpg.Record]:
    """A page of a run's steps, oldest first: the first `limit` after `after` (a step's created_at and id)."""

    async def fetch(ids: list[uuid.UUID]) -> list[asyncpg.Record]:
        principal = await info.context.principal()
        return await repo.step_pages(info.context.db, principal.tenant_id, ids, limit, after)

    loader = grouped_loader(info, f"run-steps:{limit}:{after}", fetch, key=lambda row: row["run_id"])
    return await loader.load(run_id)


async def step_count(info: Info, run_id: uuid.UUID, at_most: int | None = None) -> int:
    """How many steps a run has (`at_most` if more: counting stops there)."""

    async def fetch(ids: list[uuid.UUID]) -> list[asyncpg.Record]:
        principal = await info.context.principal()
        return await repo.step_counts(info.context.db, principal.tenant_id, ids, at_most)

    loader = counting_loader(
        info,
        f"run-step-counts:{at_most}",
        fetch,
        key=lambda row: row["run_id"],
        count=lambda row: int(row["n"]),
    )
    return await loader.load(run_id)
