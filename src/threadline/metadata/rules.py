"""Metadata bounds (as OpenAI's: at most 16 keys, keys up to 64 characters, string values up to 512) and
the `@>` filter they are searched by.

Stored as a JSON object of strings, NULL when empty, so the partial GIN indexes hold only rows that have
some (migration 2026-12-05T02).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from threadline.errors import bad_input

MAX_KEYS = 16
KEY_MAX_CHARS = 64
VALUE_MAX_CHARS = 512
# Dropped keys of one object an import names in a warning each; the rest are counted in one more. A warning per
# key made the report of a file with 650,000 one-character keys (8 MiB) 90 MB.
WARNED_KEYS_MAX = MAX_KEYS


def validated(value: Any, argument: str = "metadata") -> dict[str, str] | None:
    """The metadata to store (None for an empty object); BAD_USER_INPUT naming the bound it breaks."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise bad_input(f"{argument} must be a JSON object of string values", argument=argument)
    if len(value) > MAX_KEYS:
        raise bad_input(
            f"{argument} has {len(value)} keys; at most {MAX_KEYS} are allowed",
            argument=argument,
            limit=MAX_KEYS,
        )
    out: dict[str, str] = {}
    for key, item in value.items():
        check_key(key, argument)
        if not isinstance(item, str):
            raise bad_input(f"{argument}.{key} must be a string", argument=argument)
        check_value(item, f"{argument}.{key}", argument)
        out[key] = item
    return out or None


def check_key(key: Any, argument: str) -> str:
    if not isinstance(key, str) or not key:
        raise bad_input(f"{argument} keys must be non-empty strings", argument=argument)
    if len(key) > KEY_MAX_CHARS:
        raise bad_input(
            f"{argument} key is {len(key)} characters; at most {KEY_MAX_CHARS} are allowed",
            argument=argument,
            limit=KEY_MAX_CHARS,
        )
    if "\x00" in key:
        raise bad_input(f"{argument} keys must not contain NUL characters", argument=argument)
    return key


def check_value(value: str, where: str, argument: str) -> str:
    if len(value) > VALUE_MAX_CHARS:
        raise bad_input(
            f"{where} is {len(value)} characters; at most {VALUE_MAX_CHARS} are allowed",
            argument=argument,
            limit=VALUE_MAX_CHARS,
        )
    if "\x00" in value:
        raise bad_input(f"{where} must not contain NUL characters", argument=argument)
    return value


def containment(pairs: Iterable[tuple[str, str]], argument: str = "metadata") -> dict[str, str] | None:
    """The object a `metadata @> $n` filter needs for key = value pairs (all must hold); None for none.
    Two different values for one key can match nothing: BAD_USER_INPUT rather than an always-empty list."""
    wanted: dict[str, str] = {}
    for key, value in pairs:
        check_key(key, argument)
        check_value(value, f"{argument}.{key}", argument)
        if wanted.get(key, value) != value:
            raise bad_input(f"{argument} asks for two values of the key {key!r}", argument=argument)
        wanted[key] = value
    if len(wanted) > MAX_KEYS:
        raise bad_input(f"{argument} filters at most {MAX_KEYS} keys", argument=argument, limit=MAX_KEYS)
    return wanted or None


def imported(value: Any, where: str, warnings: list[str]) -> dict[str, str] | None:
    """Metadata read from an export file: kept within the bounds, what breaks them dropped with a warning
    (an import repairs rather than refuses)."""
    if value is None or value == {}:
        return None
    if not isinstance(value, dict):
        warnings.append(f"{where}: metadata is not an object and was dropped")
        return None
    out: dict[str, str] = {}
    dropped = 0
    for key, item in value.items():
        ok = (
            isinstance(key, str)
            and 0 < len(key) <= KEY_MAX_CHARS
            and isinstance(item, str)
            and len(item) <= VALUE_MAX_CHARS
            and "\x00" not in key + item
        )
        if not ok or len(out) == MAX_KEYS:
            dropped += 1
            if dropped <= WARNED_KEYS_MAX:
                warnings.append(
                    f"{where}: metadata key {str(key)[:KEY_MAX_CHARS]!r} was dropped (out of bounds)"
                )
            continue
        out[key] = item
    if dropped > WARNED_KEYS_MAX:
        warnings.append(
            f"{where}: {dropped - WARNED_KEYS_MAX} more metadata keys were dropped (out of bounds)"
        )
    return out or None


@dataclass(frozen=True)
class MetadataFilter:
    """A `conversations(metadata:)` filter and how to run it: `few` when few conversations of the tenant hold the
    pairs (their ids are then read from the GIN index first), else the listing walks its order and tests each
    row, finding a page of a common value in its first rows."""

    pairs: dict[str, str]
    few: bool
