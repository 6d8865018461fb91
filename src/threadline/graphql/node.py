"""The Relay `Node` interface, and `node(id:)`'s registry: each domain registers how to fetch its kinds
(in its schema.py), so the root field knows no domain."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable

import strawberry

from threadline.errors import ThreadlineError
from threadline.graphql.context import Info
from threadline.ids import Kind, parse_id


@strawberry.interface(description="An object with a global, opaque id; `node(id)` fetches any of them.")
class Node:
    id: strawberry.ID = strawberry.field(
        description="Opaque global id, unique across types: `node(id:)` fetches the object by it, and cache "
        "normalisation can key on it alone. Do not parse it."
    )


# Fetches one object of a kind for the caller; raises (NOT_FOUND, FORBIDDEN, ...) or returns None when the
# caller may not see it.
NodeResolver = Callable[[Info, uuid.UUID], Awaitable[Node | None]]

_resolvers: dict[Kind, NodeResolver] = {}


def register(kind: Kind, resolve: NodeResolver) -> None:
    """Makes `node(id:)` answer ids of `kind` with `resolve` (once per kind)."""
    if kind in _resolvers:
        raise AssertionError(f"a node resolver for {kind} is registered already")
    _resolvers[kind] = resolve


async def resolve_node(info: Info, id: str) -> Node | None:
    """The object behind a global id, or None if the id is malformed, of a kind nobody fetches, or names
    nothing the caller may see (the caller must be authenticated)."""
    await info.context.principal()
    parsed = parse_id(id)
    if parsed is None:
        return None
    kind, value = parsed
    resolve = _resolvers.get(kind)
    if resolve is None:
        return None
    try:
        return await resolve(info, value)
    except ThreadlineError:
        return None
