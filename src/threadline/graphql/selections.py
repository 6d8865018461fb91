"""Walks over a document's selections that follow fragment spreads (each fragment read once)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from graphql import FieldNode, FragmentSpreadNode, InlineFragmentNode, SelectionSetNode


def field_names(
    selection_sets: Iterable[SelectionSetNode], fragments: Mapping[str, Any], *, deep: bool
) -> frozenset[str]:
    """The field names selected in `selection_sets` through inline fragments and spreads of `fragments`;
    with `deep`, also every name selected below those fields. Linear in the document: each named fragment
    is read once, however often it is spread."""
    names: set[str] = set()
    visited: set[str] = set()
    pending = list(selection_sets)
    while pending:
        for selection in pending.pop().selections:
            if isinstance(selection, FieldNode):
                names.add(selection.name.value)
                if deep and selection.selection_set is not None:
                    pending.append(selection.selection_set)
            elif isinstance(selection, InlineFragmentNode):
                pending.append(selection.selection_set)
            elif isinstance(selection, FragmentSpreadNode) and selection.name.value not in visited:
                visited.add(selection.name.value)
                fragment = fragments.get(selection.name.value)
                if fragment is not None:
                    pending.append(fragment.selection_set)
    return frozenset(names)


def root_fields(selection_set: SelectionSetNode, fragments: Mapping[str, Any]) -> list[FieldNode]:
    """The fields an operation's selection executes at its root, in order, through inline fragments and spreads
    of `fragments` (each fragment once: spread twice, its fields merge and execute once), without `__typename`
    and the other introspection fields. Rate limits and idempotency keys count what a mutation runs with it."""
    found: list[FieldNode] = []
    visited: set[str] = set()

    def walk(selections: SelectionSetNode) -> None:
        for selection in selections.selections:
            if isinstance(selection, FieldNode):
                if not selection.name.value.startswith("__"):
                    found.append(selection)
            elif isinstance(selection, InlineFragmentNode):
                walk(selection.selection_set)
            elif isinstance(selection, FragmentSpreadNode) and selection.name.value not in visited:
                visited.add(selection.name.value)  # validation refuses cycles later anyway
                fragment = fragments.get(selection.name.value)
                if fragment is not None:
                    walk(fragment.selection_set)

    walk(selection_set)
    return found
