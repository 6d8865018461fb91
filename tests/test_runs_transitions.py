"""The run state machine's table, as a specification (the API tests exercise each reachable edge)."""

from __future__ import annotations

import itertools

import pytest

from threadline.errors import ThreadlineError
from threadline.runs.transitions import ACTIVE, TERMINAL, RunStatus, check

S = RunStatus
ALLOWED = {
    (S.QUEUED, S.IN_PROGRESS),  # a worker claims it
    (S.QUEUED, S.CANCELLED),  # cancel of a queued run: forced, nothing executes
    (S.IN_PROGRESS, S.COMPLETED),
    (S.IN_PROGRESS, S.FAILED),
    (S.IN_PROGRESS, S.INCOMPLETE),  # the model stopped at its length limit
    (S.IN_PROGRESS, S.CANCELLING),  # cancel requested: the worker stops
    (S.IN_PROGRESS, S.CANCELLED),  # cancel of a run whose worker is gone: forced
    (S.IN_PROGRESS, S.EXPIRED),  # its worker stopped heartbeating (policy: expire)
    (S.IN_PROGRESS, S.QUEUED),  # its worker stopped heartbeating (policy: requeue)
    (S.IN_PROGRESS, S.REQUIRES_ACTION),  # reserved for tool calls
    (S.REQUIRES_ACTION, S.QUEUED),
    (S.REQUIRES_ACTION, S.CANCELLED),
    (S.REQUIRES_ACTION, S.EXPIRED),
    (S.CANCELLING, S.CANCELLED),
}


@pytest.mark.parametrize(("current", "target"), list(itertools.product(RunStatus, RunStatus)))
def test_only_the_transitions_of_the_table_are_allowed(current: RunStatus, target: RunStatus) -> None:
    if (current, target) in ALLOWED:
        check(current, target)
        return
    with pytest.raises(ThreadlineError) as refused:
        check(current, target)
    assert refused.value.code.value == "CONFLICT"
    if current in TERMINAL:
        assert refused.value.message == f"The run is {current.value}, which is final"


def test_terminal_and_active_states_partition_the_statuses() -> None:
    assert TERMINAL == {S.COMPLETED, S.FAILED, S.INCOMPLETE, S.CANCELLED, S.EXPIRED}
    assert ACTIVE == {S.QUEUED, S.IN_PROGRESS, S.REQUIRES_ACTION, S.CANCELLING}
