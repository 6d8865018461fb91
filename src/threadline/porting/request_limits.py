"""What one import request through the API may carry, and what it costs in rate-limit budget.

An import does work in proportion to its size (parsing, planning, one transaction per conversation),
so a single mutation must not carry an unbounded amount of it: requests over a cap are refused whole,
before anything is written (larger imports belong to `threadline import`, which streams), and the
accepted ones draw from the `mutations` budget by size. Checks go cheapest first: bytes, then the
top-level items (before parsing), then conversations and messages once parsed.
"""

from __future__ import annotations

import json
import math
from typing import Any

import orjson

from threadline.errors import ThreadlineError, bad_input
from threadline.settings import Settings

_ELSEWHERE = "use `threadline import` for larger imports"


def _refuse(what: str, found: int, limit: int, setting: str) -> ThreadlineError:
    return bad_input(
        f"The import holds {found} {what}; one request may carry at most {limit} ({setting}): {_ELSEWHERE}",
        argument="input.data",
        limit=limit,
        setting=setting,
    )


def encoded_size(data: Any) -> int:
    """Bytes of `data` as JSON (what the client sent, give or take whitespace)."""
    try:
        return len(orjson.dumps(data))
    except (orjson.JSONEncodeError, RecursionError):
        # orjson refuses integers over 64 bits and lone surrogates; the standard library takes both.
        try:
            return len(json.dumps(data, separators=(",", ":")))
        except RecursionError as exc:
            raise bad_input("input.data is nested too deeply", argument="input.data") from exc


def check_bytes(data: Any, settings: Settings) -> None:
    size = encoded_size(data)
    if size > settings.import_api_max_bytes:
        raise _refuse("bytes of JSON", size, settings.import_api_max_bytes, "THREADLINE_IMPORT_API_MAX_BYTES")


def check_conversations(count: int, settings: Settings) -> None:
    if count > settings.import_api_max_conversations:
        raise _refuse(
            "conversations",
            count,
            settings.import_api_max_conversations,
            "THREADLINE_IMPORT_API_MAX_CONVERSATIONS",
        )


def check_messages(count: int, settings: Settings) -> None:
    if count > settings.import_api_max_messages:
        raise _refuse(
            "messages", count, settings.import_api_max_messages, "THREADLINE_IMPORT_API_MAX_MESSAGES"
        )


def mutation_cost(conversations: int, messages: int, settings: Settings) -> int:
    """Units of the `mutations` budget the import costs: one per started `import_items_per_mutation`
    conversations and messages (at least the one every mutation field costs)."""
    per_unit = max(settings.import_items_per_mutation, 1)
    return max(1, math.ceil((conversations + messages) / per_unit))


def check_export_messages(count: int, limit: int | None) -> None:
    """An export through the API is built whole in memory, then encoded: one of a conversation of more than
    THREADLINE_QUERY_MAX_MESSAGES messages (as a query returning that many) is refused before it is read."""
    if limit is not None and count > limit:
        raise bad_input(
            f"The conversation holds {count} messages; one export through the API may carry at most {limit} "
            "(THREADLINE_QUERY_MAX_MESSAGES): use `threadline export --conversation` for larger ones",
            argument="id",
            limit=limit,
            setting="THREADLINE_QUERY_MAX_MESSAGES",
        )
