"""Arguments that are nullable but must be given: GraphQL cannot say "required, null allowed", so such an argument
defaults to UNSET (the printed schema shows no default) and an omitted one is refused here, not passed on."""

from __future__ import annotations

from typing import TypeVar

import strawberry

from threadline.errors import bad_input

T = TypeVar("T")


def given(value: T, argument: str, null_means: str) -> T:
    """`value` unless the caller omitted the argument: BAD_USER_INPUT naming it and what null would do (an
    omission is not taken for null: null removes or turns off)."""
    if value is strawberry.UNSET:
        raise bad_input(f"Pass `{argument}` (null {null_means})", argument=argument)
    return value
