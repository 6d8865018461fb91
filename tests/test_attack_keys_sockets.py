"""Attacks on key lineage (143b3a2) and the per-user socket cap (0a7da8b), through the real API (uvicorn +
embedded PostgreSQL, real WebSockets).

- Erasing (or anonymising) a user deletes their keys, and a trigger revokes every live key those keys minted,
  other users' too. Those revocations were not audited at all, where the same cascade through `apiKeyRevoke`
  audits each key (`api_key.revoke`, `details.cascadedFrom`): a member's key could stop working with no trace
  in the audit log of why.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.harness import Actor, Client, ServerThread
from tests.test_key_lineage import AUDIT, ERASE, mint

VIEWER = "{ viewer { id } }"
ANONYMISE = "mutation($u: ID!) { userAnonymise(userId: $u) { __typename } }"
OWN_KEYS = """query($u: ID!) { node(id: $u) { ... on User { apiKeys(first: 5) { nodes { id } } } } }"""


@pytest.mark.parametrize("removal", [ERASE, ANONYMISE])
def test_keys_revoked_because_their_minting_key_was_deleted_are_audited(
    removal: str, admin: Actor, make_user: Callable[..., Actor], server: ServerThread
) -> None:
    second_admin = make_user(admin, role="ADMIN")
    (second_key_id,) = [
        k["id"]
        for k in second_admin.client.ok(OWN_KEYS, {"u": second_admin.user_id})["node"]["apiKeys"]["nodes"]
    ]
    member = make_user(admin)
    # second admin's key -> a key of the member -> a key that key minted (transitively revoked too)
    child_secret, child_id = mint(second_admin.client, member.user_id, "made by the second admin")
    child = Client(server.url, child_secret)
    try:
        grandchild_secret, grandchild_id = mint(child, member.user_id, "made by that key")
    finally:
        child.close()

    admin.client.ok(removal, {"u": second_admin.user_id})

    grandchild = Client(server.url, grandchild_secret)
    try:
        assert grandchild.code(VIEWER) == "UNAUTHENTICATED"
    finally:
        grandchild.close()
    for key_id in (child_id, grandchild_id):
        entries: list[dict[str, Any]] = admin.client.ok(AUDIT, {"t": key_id})["auditLog"]["nodes"]
        assert len(entries) == 1, entries
        assert entries[0]["action"] == "api_key.revoke"
        assert entries[0]["details"]["cascadedFrom"] == second_key_id
    # The member's own key, outside the lineage, is untouched (and its revocation not invented).
    assert member.client.ok(VIEWER)["viewer"]["id"] == member.user_id
