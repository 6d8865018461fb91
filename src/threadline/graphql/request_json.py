"""What the JSON of a GraphQL request (an HTTP body, GET variables, a WebSocket message) may hold.

Two things a JSON parser accepts and the rest of the server cannot take:
- nesting: json.loads, graphql-core and our own code recurse on it, so ~1,000 levels raised RecursionError
  (an HTTP 500 with a traceback before authentication; a dropped socket). Deeper than JSON_MAX_DEPTH is refused
  before anything else looks at the value: HTTP 400, WebSocket close 4400.
- lone UTF-16 surrogates (`"\\ud800"`): valid JSON escapes, but not Unicode text, so PostgreSQL (and UTF-8)
  cannot take them. Refused as BAD_USER_INPUT wherever they are, instead of an INTERNAL from the driver.
"""

from __future__ import annotations

import json
import re

# No input type of the schema nests deeper than a few levels, and export files (the JSON scalar of imports)
# a dozen; 64 leaves room and keeps every walk over a request's values far from the recursion limit.
JSON_MAX_DEPTH = 64
LONE_SURROGATE_MESSAGE = (
    "Text must be valid Unicode: a lone UTF-16 surrogate (\\ud800-\\udfff) is not a character"
)

_SURROGATE = re.compile("[\ud800-\udfff]")
# A lone surrogate in decoded JSON text can only come from a \uD800-\uDFFF escape, so text without such an
# escape needs no walk (pairs, the usual emoji, also match; the walk then tells them apart).
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89abcdefABCDEF]")
# In bytes, also a surrogate's own three bytes (ED A0-BF ..): json.loads decodes bytes with "surrogatepass".
_SURROGATE_BYTES = re.compile(rb"\\u[dD][89abcdefABCDEF]|\xed[\xa0-\xbf]")
_UTF8 = frozenset({"utf-8", "utf-8-sig"})


class JsonTooDeep(json.JSONDecodeError):
    """A JSONDecodeError, so that strawberry's WebSocket reader turns it into a 4400 close."""

    def __init__(self) -> None:
        super().__init__(f"JSON nested deeper than {JSON_MAX_DEPTH} levels", "", 0)


def decode(data: str | bytes) -> object:
    """json.loads, refusing values nested deeper than JSON_MAX_DEPTH (JsonTooDeep)."""
    try:
        value = json.loads(data)
    except RecursionError:
        raise JsonTooDeep from None
    if _too_deep(value):
        raise JsonTooDeep
    return value


def _too_deep(value: object) -> bool:
    stack: list[tuple[object, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        if depth > JSON_MAX_DEPTH:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


def may_hold_lone_surrogate(text: str | bytes) -> bool:
    """False when the raw JSON text cannot decode to a lone surrogate (the common case: no walk needed)."""
    if isinstance(text, bytes):
        # json.loads also takes UTF-16 and UTF-32 bytes (it tells them by their first four), whose escapes and
        # surrogates this pattern cannot see: such a body is always walked.
        return _SURROGATE_BYTES.search(text) is not None or json.detect_encoding(text[:4]) not in _UTF8
    return _SURROGATE_ESCAPE.search(text) is not None or _SURROGATE.search(text) is not None


def holds_lone_surrogate(value: object) -> bool:
    """Whether any string of a decoded JSON value (keys included) holds a lone surrogate."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if _SURROGATE.search(item):
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False
