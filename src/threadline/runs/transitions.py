"""The run state machine: the one table of allowed transitions, and the step status each end implies.

    QUEUED -> IN_PROGRESS -> COMPLETED | FAILED | INCOMPLETE | EXPIRED
                          -> CANCELLING -> CANCELLED
                          -> REQUIRES_ACTION -> QUEUED (tool outputs submitted)
    QUEUED | REQUIRES_ACTION -> CANCELLED   (forced cancel: nothing is executing)
    IN_PROGRESS | CANCELLING -> CANCELLED   (forced cancel: the worker is gone)
    IN_PROGRESS -> QUEUED                   (the worker is gone and the policy is to requeue)
    REQUIRES_ACTION -> EXPIRED              (no tool outputs in time)

Terminal states are final. Every status change in the repository names its expected current
states from this table, so a change that races another one fails instead of overwriting it.
"""

from __future__ import annotations

from enum import StrEnum

from threadline.errors import conflict


class RunStatus(StrEnum):
    QUEUED = "QUEUED"
    IN_PROGRESS = "IN_PROGRESS"
    REQUIRES_ACTION = "REQUIRES_ACTION"
    CANCELLING = "CANCELLING"
    CANCELLED = "CANCELLED"
    FAILED = "FAILED"
    COMPLETED = "COMPLETED"
    INCOMPLETE = "INCOMPLETE"
    EXPIRED = "EXPIRED"


class StepStatus(StrEnum):
    IN_PROGRESS = "IN_PROGRESS"
    CANCELLED = "CANCELLED"
    FAILED = "FAILED"
    COMPLETED = "COMPLETED"
    EXPIRED = "EXPIRED"


class StepType(StrEnum):
    MESSAGE_CREATION = "MESSAGE_CREATION"
    TOOL_CALLS = "TOOL_CALLS"  # reserved: no provider calls tools yet


S = RunStatus

TRANSITIONS: dict[RunStatus, frozenset[RunStatus]] = {
    S.QUEUED: frozenset({S.IN_PROGRESS, S.CANCELLED}),
    S.IN_PROGRESS: frozenset(
        {
            S.COMPLETED,
            S.FAILED,
            S.INCOMPLETE,
            S.CANCELLING,
            S.CANCELLED,
            S.EXPIRED,
            S.QUEUED,
            S.REQUIRES_ACTION,
        }
    ),
    S.REQUIRES_ACTION: frozenset({S.QUEUED, S.CANCELLED, S.EXPIRED}),
    S.CANCELLING: frozenset({S.CANCELLED}),
    S.CANCELLED: frozenset(),
    S.FAILED: frozenset(),
    S.COMPLETED: frozenset(),
    S.INCOMPLETE: frozenset(),
    S.EXPIRED: frozenset(),
}

TERMINAL = frozenset(status for status, targets in TRANSITIONS.items() if not targets)
ACTIVE = frozenset(RunStatus) - TERMINAL
# Statuses in which a worker owns the run and must keep heartbeating.
EXECUTING = frozenset({S.IN_PROGRESS, S.CANCELLING})

# The status a run's open steps end with when the run ends.
STEP_END: dict[RunStatus, StepStatus] = {
    S.COMPLETED: StepStatus.COMPLETED,
    S.INCOMPLETE: StepStatus.COMPLETED,
    S.FAILED: StepStatus.FAILED,
    S.CANCELLED: StepStatus.CANCELLED,
    S.EXPIRED: StepStatus.EXPIRED,
    S.QUEUED: StepStatus.EXPIRED,  # a requeued run starts a new step; the lost attempt's step expired
}

# The timestamp column set when a run enters a status.
STAMP: dict[RunStatus, str] = {
    S.IN_PROGRESS: "started_at",
    S.COMPLETED: "completed_at",
    S.INCOMPLETE: "completed_at",
    S.CANCELLED: "cancelled_at",
    S.FAILED: "failed_at",
    S.EXPIRED: "expired_at",
}


def allowed(current: RunStatus, target: RunStatus) -> bool:
    return target in TRANSITIONS[current]


def sources(target: RunStatus) -> frozenset[RunStatus]:
    """Every status from which `target` may be entered."""
    return frozenset(s for s, targets in TRANSITIONS.items() if target in targets)


def check(current: RunStatus, target: RunStatus) -> None:
    """CONFLICT unless `current -> target` is in the table."""
    if allowed(current, target):
        return
    if current in TERMINAL:
        raise conflict(f"The run is {current.value}, which is final")
    raise conflict(f"A run cannot go from {current.value} to {target.value}")
