"""The PII policy values and where a tenant's is kept (no dependencies: events and auth read it too)."""

from __future__ import annotations

from enum import StrEnum


class PiiPolicy(StrEnum):
    OFF = "OFF"
    DETECT = "DETECT"
    MASK_ON_WRITE = "MASK_ON_WRITE"
    MASK_ON_READ = "MASK_ON_READ"


POLICY_KEY = "piiPolicy"  # in tenant.settings


def parse(value: object) -> PiiPolicy:
    """A stored value as a policy; anything unknown (or absent) is OFF."""
    try:
        return PiiPolicy(value) if isinstance(value, str) else PiiPolicy.OFF
    except ValueError:
        return PiiPolicy.OFF


def masks_events(policy: object) -> bool:
    """Logged events carry masked text under both masking policies: under MASK_ON_WRITE nothing else exists,
    and under MASK_ON_READ a replay or a live event may reach any reader (the author and admins read the
    original through queries)."""
    return parse(policy) in (PiiPolicy.MASK_ON_WRITE, PiiPolicy.MASK_ON_READ)
