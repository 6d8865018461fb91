"""Documents that passed the limit rule, remembered (issue 14 item 3): the rule walks the whole document on
every request (0.1-0.25 ms, and a validation-rule class made per request), though clients mostly send the same
few documents with the same variables.

Only a pass is remembered, keyed by everything the rule reads: the exact query text, a digest of the variables
(list sizes come from them; a digest keeps no caller content in memory), the request's settings object, the
extension's list caps and the schema. The query text is kept only when it holds no string literal (as
graphql.parse_cache). Bounded in count.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import orjson

from threadline.graphql import parse_cache

MAX_PASSES = 2000

# Keyed by the ids of the settings, list caps and schema, which the values keep alive (an id is never reused
# while its object lives).
_passes: OrderedDict[tuple[Any, ...], tuple[object, ...]] = OrderedDict()


def key(
    query: str | None,
    variables: Mapping[str, Any] | None,
    settings: object,
    list_caps: object,
    schema: object,
) -> tuple[Any, ...] | None:
    """The cache key of one request's limit check, or None when it cannot be remembered."""
    if not parse_cache.cacheable(query):
        return None
    try:
        encoded = orjson.dumps(dict(variables or {}), option=orjson.OPT_SORT_KEYS)
    except TypeError:
        return None
    digest = hashlib.blake2b(encoded, digest_size=16).digest()
    return (query, digest, id(settings), id(list_caps), id(schema))


def passed(cache_key: tuple[Any, ...]) -> bool:
    if cache_key not in _passes:
        return False
    with contextlib.suppress(KeyError):  # test servers share a process (and this cache) across threads
        _passes.move_to_end(cache_key)
    return True


def remember(cache_key: tuple[Any, ...], settings: object, list_caps: object, schema: object) -> None:
    _passes[cache_key] = (settings, list_caps, schema)
    while len(_passes) > MAX_PASSES:
        with contextlib.suppress(KeyError):
            _passes.popitem(last=False)
