from tests.harness import Actor


def test_viewer_is_the_api_key_owner(admin: Actor) -> None:
    data = admin.client.ok("{ viewer { id role } }")
    assert data["viewer"] == {"id": admin.user_id, "role": "ADMIN"}
