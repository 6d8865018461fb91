"""Authorization attack on files: bytes of a file reach only those who may read a message holding it."""

from __future__ import annotations

import json
import zipfile
from collections.abc import Callable
from pathlib import Path

from tests.api import create_conversation
from tests.harness import Actor, ServerThread
from tests.test_files import START, cli, download, upload

IMPORT = """mutation($i: ConversationImportInput!) { conversationImportReport(input: $i) {
  imported conversations { id } } }"""


def test_an_imported_attachment_entry_naming_a_colleagues_file_does_not_export_its_bytes(
    server: ServerThread, admin: Actor, make_user: Callable[..., Actor], dsn: str, tmp_path: Path
) -> None:
    victim, attacker = make_user(admin), make_user(admin)
    secret = b"the victim's private notes\n"
    file = upload(server.url, victim, secret, "notes.txt", "text/plain").json()
    private = create_conversation(victim, "private")
    parts = [{"text": "x"}, {"file": {"name": "notes.txt", "fileId": file["id"]}}]
    victim.client.ok(START, {"c": private, "i": {"content": "x", "parts": parts}})
    # The attacker knows the file's id (say, from when they could read the conversation) and forges an export
    # whose message lists it as a stored file.
    document = victim.client.ok("query($id: ID!) { conversationExport(id: $id) }", {"id": private})
    forged = json.loads(json.dumps(document["conversationExport"]))
    forged["conversation_id"] = "cnv_" + "1" * 32
    report = attacker.client.ok(IMPORT, {"i": {"format": "THREADLINE", "data": [forged]}})
    (imported,) = report["conversationImportReport"]["conversations"]
    assert download(server.url, attacker, file["id"]).status_code == 404

    target = tmp_path / "accessattack_export.zip"
    cli(dsn, "export", "--conversation", imported["id"], "--out", str(target), "--api-key", attacker.api_key)
    with zipfile.ZipFile(target) as archive:
        assert [archive.read(name) for name in archive.namelist() if name.startswith("files/")] == []
