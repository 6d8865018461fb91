"""The caller every request carries."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from enum import StrEnum


class Role(StrEnum):
    ADMIN = "ADMIN"
    MANAGER = "MANAGER"
    MEMBER = "MEMBER"


@dataclass(frozen=True)
class Principal:
    tenant_id: uuid.UUID
    user_id: uuid.UUID
    role: Role
    team: str | None
    # The tenant's PII policy (privacy.policy), read with the credential: MASK_ON_READ masks what this caller
    # reads (privacy.reading).
    pii_policy: str = "OFF"
    # The API key the caller authenticated with (None for a JWT): a key it mints records it as its parent, and
    # is revoked with it (auth.service).
    key_id: uuid.UUID | None = None

    @property
    def is_admin(self) -> bool:
        return self.role is Role.ADMIN
