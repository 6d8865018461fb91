"""The conversation access rule, in one place (pure: no I/O).

A principal's access to a conversation is NONE outside its tenant; inside it, the highest of:

- MANAGE for a tenant ADMIN, on every conversation of the tenant;
- what its participant row grants: OWNER → MANAGE, MEMBER → WRITE, VIEWER → READ;
- READ for a MANAGER on the conversations owned by members of its team.

The rule has two forms, both built from this module so they cannot drift apart:
`access.access_level` decides for one conversation row (read with `repository.conversation_with_access`),
and `repository.visibility_sql` is the same rule's "access >= READ" as a WHERE fragment, for lists,
search, tags and insights. Both ask `reach()` what the principal sees beyond its own participation.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from threadline.auth.principal import Principal, Role


class Access(IntEnum):
    NONE = 0
    READ = 1
    WRITE = 2
    MANAGE = 3


PARTICIPANT_ACCESS: dict[str, Access] = {
    "OWNER": Access.MANAGE,
    "MEMBER": Access.WRITE,
    "VIEWER": Access.READ,
}
TENANT_ADMIN_ACCESS = Access.MANAGE
TEAM_MANAGER_ACCESS = Access.READ
# The SQL form reads "is a participant" as "may read": every participant role must grant at least READ.
assert min(PARTICIPANT_ACCESS.values()) >= Access.READ


@dataclass(frozen=True)
class Reach:
    """Which conversations of its tenant a principal reaches without being a participant."""

    whole_tenant: bool  # a tenant admin: all of them
    team: str | None  # a manager: those whose owner is in this team


def reach(principal: Principal) -> Reach:
    if principal.role is Role.ADMIN:
        return Reach(whole_tenant=True, team=None)
    if principal.role is Role.MANAGER and principal.team:
        return Reach(whole_tenant=False, team=principal.team)
    return Reach(whole_tenant=False, team=None)


def access_level(
    principal: Principal, tenant_id: object, participant_role: str | None, owner_team: str | None
) -> Access:
    """The rule for one conversation: its tenant, the principal's participant role in it (None if not a
    participant) and the team of its owner."""
    if tenant_id != principal.tenant_id:
        return Access.NONE
    scope = reach(principal)
    if scope.whole_tenant:
        return TENANT_ADMIN_ACCESS
    level = PARTICIPANT_ACCESS.get(participant_role or "", Access.NONE)
    if scope.team is not None and owner_team == scope.team:
        level = max(level, TEAM_MANAGER_ACCESS)
    return level
