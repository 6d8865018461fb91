"""Insight rules: the window, the viewer's scope, and series with every day present."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum
from typing import Any

import asyncpg

from threadline.auth.principal import Principal, Role
from threadline.db import Database
from threadline.enrich.topics import Topic
from threadline.enrich.topics import topics as count_topics
from threadline.errors import bad_input
from threadline.search import insight_repository as repo
from threadline.search.service import planned

DEFAULT_DAYS = 30
MAX_DAYS = 366


class InsightScope(StrEnum):
    OWN = "OWN"
    TEAM = "TEAM"
    TENANT = "TENANT"


@dataclass(frozen=True)
class Window:
    since: datetime
    until: datetime

    @property
    def days(self) -> list[date]:
        """Every UTC day the window touches, in order."""
        if self.until <= self.since:
            return []
        first = self.since.astimezone(UTC).date()
        last = (self.until - timedelta(microseconds=1)).astimezone(UTC).date()
        return [first + timedelta(days=i) for i in range((last - first).days + 1)]


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def window(since: datetime | None, until: datetime | None) -> Window:
    """[from, to): `to` defaults to now, `from` to 30 days before `to`; at most 366 days."""
    end = _aware(until) if until is not None else datetime.now(UTC)
    if since is not None:
        start = _aware(since)
    else:  # 30 days before `to`, or the earliest instant there is
        start = max(end, datetime.min.replace(tzinfo=UTC) + timedelta(days=DEFAULT_DAYS)) - timedelta(
            days=DEFAULT_DAYS
        )
    if start > end:
        raise bad_input("`from` must not be after `to`", argument="from")
    if end - start > timedelta(days=MAX_DAYS):
        raise bad_input(f"Insights cover at most {MAX_DAYS} days", argument="from", limit=MAX_DAYS)
    return Window(start, end)


async def _planned(db: Database, query: Any, *args: Any) -> Any:
    async with planned(db) as tx:
        return await query(tx, *args)


def scope_of(principal: Principal) -> InsightScope:
    if principal.role is Role.ADMIN:
        return InsightScope.TENANT
    if principal.role is Role.MANAGER and principal.team:
        return InsightScope.TEAM
    return InsightScope.OWN


async def conversation_totals(db: Database, principal: Principal, w: Window) -> asyncpg.Record:
    return await _planned(db, repo.conversation_totals, principal, w.since, w.until)


async def conversations_per_day(db: Database, principal: Principal, w: Window) -> list[tuple[date, int]]:
    counts = {
        r["day"]: r["count"]
        for r in await _planned(db, repo.conversations_per_day, principal, w.since, w.until)
    }
    return [(day, counts.get(day, 0)) for day in w.days]


@dataclass(frozen=True)
class Activity:
    per_day: list[tuple[date, int, int, int]]  # (day, messages, prompt tokens, completion tokens), every day
    per_hour: list[tuple[int, int]]  # (hour, messages), busiest first, idle hours left out


async def message_activity(db: Database, principal: Principal, w: Window) -> Activity:
    rows = await _planned(db, repo.message_activity, principal, w.since, w.until)
    days = {r["day"]: r for r in rows if r["day"] is not None}
    per_day = []
    for day in w.days:
        r = days.get(day)
        per_day.append(
            (day, r["messages"], r["prompt_tokens"], r["completion_tokens"]) if r else (day, 0, 0, 0)
        )
    hours = sorted(
        ((r["hour"], r["messages"]) for r in rows if r["hour"] is not None), key=lambda h: (-h[1], h[0])
    )
    return Activity(per_day, hours)


async def popular_tags(db: Database, principal: Principal, w: Window, limit: int) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await _planned(db, repo.popular_tags, principal, w.since, w.until, limit)
    return rows


async def feedback_by_model(db: Database, principal: Principal, w: Window) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await _planned(db, repo.feedback_by_model, principal, w.since, w.until)
    return rows


async def providers(db: Database, principal: Principal, w: Window) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await _planned(db, repo.providers, principal, w.since, w.until)
    return rows


# Topics, conversation length and knowledge gaps (issue 19 item 4) ------------------------------------------

TOPIC_MESSAGES = 2000  # the newest user messages of the window topics are counted from
TOPIC_MESSAGE_CHARS = 500
TOPIC_EXAMPLES = 3


async def conversation_length(db: Database, principal: Principal, w: Window) -> asyncpg.Record:
    row: asyncpg.Record = await _planned(db, repo.conversation_length, principal, w.since, w.until)
    return row


async def topics(db: Database, principal: Principal, w: Window, limit: int) -> list[tuple[Topic, list[Any]]]:
    """The most discussed topics, each with the example conversations (rows) the caller may read."""
    rows = await _planned(
        db, repo.user_messages, principal, w.since, w.until, TOPIC_MESSAGES, TOPIC_MESSAGE_CHARS
    )
    found = count_topics(((r["conversation_id"], r["content"]) for r in rows), limit, TOPIC_EXAMPLES)
    wanted = list({cid for t in found for cid in t.examples})
    readable = (
        {r["id"]: r for r in await repo.readable_conversations(db, principal, wanted)} if wanted else {}
    )
    return [(t, [readable[cid] for cid in t.examples if cid in readable]) for t in found]


async def knowledge_gaps(db: Database, principal: Principal, w: Window, limit: int) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await _planned(db, repo.knowledge_gaps, principal, w.since, w.until, limit)
    return rows
