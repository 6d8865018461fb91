"""The Relay `Node` interface."""

import strawberry


@strawberry.interface(description="An object with a global, opaque id; `node(id)` fetches any of them.")
class Node:
    id: strawberry.ID = strawberry.field(description="Opaque global id.")
