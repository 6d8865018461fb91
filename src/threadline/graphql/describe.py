"""Descriptions of enum values, for enums whose Python members the domain code uses as plain values."""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum


def describe_values(enum: type[Enum], descriptions: Mapping[str, str]) -> None:
    """Gives each value of a `strawberry.enum` its description, by member name.

    `strawberry.enum_value` would put its wrapper into the members of StrEnums that the repositories and
    services compare with stored strings; setting the descriptions on strawberry's definition keeps them
    plain. Every member must be described (a new one without a description fails at import).
    """
    definition = enum.__strawberry_definition__  # type: ignore[attr-defined]
    missing = {member.name for member in enum} - set(descriptions)
    unknown = set(descriptions) - {member.name for member in enum}
    if missing or unknown:
        raise ValueError(
            f"{definition.name}: values without a description {sorted(missing)}, unknown {sorted(unknown)}"
        )
    for value in definition.values:
        value.description = descriptions[value.name]


def describe_type(cls: type, description: str) -> None:
    """Describes a type built by `merge_types` (the root types), which takes no description of its own."""
    cls.__strawberry_definition__.description = description  # type: ignore[attr-defined]
