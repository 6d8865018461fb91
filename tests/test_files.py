"""Attachments (issue 18 item 5): POST /files and GET /files/{id}, with the messages' access rules, sniffed
types, checksums, deduplication, size limits and quotas, and erasure with their messages and users."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests import harness
from tests.api import count_rows, create_conversation, join
from tests.harness import Actor, Loop, ServerThread

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4
START = """mutation($c: ID!, $i: MessageInput!) { threadStart(conversationId: $c, input: $i) {
  id parts { __typename ... on FilePart { name fileId } ... on ImagePart { fileId } } } }"""


def upload(
    base_url: str, actor: Actor | None, data: bytes, filename: str = "photo.png", declared: str = "image/png"
) -> httpx.Response:
    headers = {"Authorization": f"Bearer {actor.api_key}"} if actor else {}
    return httpx.post(
        f"{base_url}/files", files={"file": (filename, data, declared)}, headers=headers, timeout=60
    )


def download(base_url: str, actor: Actor | None, file_id: str) -> httpx.Response:
    headers = {"Authorization": f"Bearer {actor.api_key}"} if actor else {}
    return httpx.get(f"{base_url}/files/{file_id}", headers=headers, timeout=60)


def attach(actor: Actor, conversation: str, file_id: str, name: str = "photo.png") -> dict[str, Any]:
    message = {
        "content": "see attached",
        "parts": [{"text": "see attached"}, {"file": {"name": name, "fileId": file_id}}],
    }
    result: dict[str, Any] = actor.client.ok(START, {"c": conversation, "i": message})["threadStart"]
    return result


def test_upload_attach_and_download_with_the_messages_access_rules(
    server: ServerThread, admin: Actor, make_user: Callable[..., Actor]
) -> None:
    member = make_user(admin)
    outsider = make_user(admin)
    created = upload(server.url, admin, PNG, "holiday.png", declared="text/html")
    assert created.status_code == 201, created.text
    file = created.json()
    assert file["contentType"] == "image/png"  # sniffed from the bytes, not the declared text/html
    assert file["size"] == len(PNG) and file["sha256"] == hashlib.sha256(PNG).hexdigest()
    assert file["filename"] == "holiday.png" and file["deduplicated"] is False
    assert file["url"] == f"/files/{file['id']}"

    # Before it is attached: the uploader's alone.
    assert download(server.url, admin, file["id"]).content == PNG
    assert download(server.url, member, file["id"]).status_code == 404

    conversation = create_conversation(admin, "with a file")
    join(admin, member, conversation, "VIEWER")
    message = attach(admin, conversation, file["id"], "holiday.png")
    assert message["parts"][1] == {"__typename": "FilePart", "name": "holiday.png", "fileId": file["id"]}

    got = download(server.url, member, file["id"])
    assert got.status_code == 200 and got.content == PNG
    assert got.headers["content-type"] == "image/png"
    assert (
        got.headers["content-disposition"]
        == "attachment; filename=\"holiday.png\"; filename*=UTF-8''holiday.png"
    )
    assert got.headers["x-content-type-options"] == "nosniff"
    assert "sandbox" in got.headers["content-security-policy"]
    assert got.headers["etag"] == f'"{file["sha256"]}"'
    assert download(server.url, outsider, file["id"]).status_code == 404


def test_html_is_stored_as_text_and_always_downloaded_as_an_attachment(
    server: ServerThread, admin: Actor
) -> None:
    page = b"<html><script>alert(document.cookie)</script></html>"
    file = upload(server.url, admin, page, "naïve;page.html", declared="text/html").json()
    assert file["contentType"] == "text/plain"
    got = download(server.url, admin, file["id"])
    assert got.headers["content-type"].startswith("text/plain")
    assert got.headers["content-disposition"] == (
        "attachment; filename=\"na_ve_page.html\"; filename*=UTF-8''na%C3%AFve%3Bpage.html"
    )


def test_the_same_bytes_are_stored_once_per_tenant(
    server: ServerThread, admin: Actor, make_tenant: Callable[..., Actor], loop: Loop, dsn: str
) -> None:
    first = upload(server.url, admin, PNG, "a.png").json()
    second = upload(server.url, admin, PNG, "b.png").json()
    assert second["deduplicated"] is True and second["id"] != first["id"] and second["filename"] == "b.png"
    other_tenant = make_tenant()
    third = upload(server.url, other_tenant, PNG, "c.png").json()
    assert third["deduplicated"] is False  # never across tenants
    assert count_rows(loop, dsn, "file_blob") == 2
    assert count_rows(loop, dsn, "file") == 3


def test_attaching_someone_elses_file_is_not_found(
    server: ServerThread, admin: Actor, make_user: Callable[..., Actor]
) -> None:
    member = make_user(admin)
    conversation = create_conversation(admin, "shared")
    join(admin, member, conversation)
    theirs = upload(server.url, admin, PNG).json()
    message = {"content": "x", "parts": [{"text": "x"}, {"image": {"fileId": theirs["id"]}}]}
    error = member.client.error(START, {"c": conversation, "i": message})
    assert error["extensions"]["code"] == "NOT_FOUND" and error["message"] == "File not found"


def test_without_credentials_or_for_unknown_ids(server: ServerThread, admin: Actor) -> None:
    assert upload(server.url, None, PNG).status_code == 401
    file = upload(server.url, admin, PNG).json()
    assert download(server.url, None, file["id"]).status_code == 401
    for wrong in ("fil_" + "0" * 32, "nope", "cnv_" + file["id"][4:]):
        answer = download(server.url, admin, wrong)
        assert answer.status_code == 404 and answer.json()["errors"][0]["extensions"]["code"] == "NOT_FOUND"
    not_multipart = httpx.post(
        f"{server.url}/files", content=PNG, headers={"Authorization": f"Bearer {admin.api_key}"}
    )
    assert not_multipart.status_code == 415


def test_a_deleted_message_takes_its_files_and_their_bytes_with_it(
    server: ServerThread, admin: Actor, loop: Loop, dsn: str
) -> None:
    conversation = create_conversation(admin, "to delete")
    file = upload(server.url, admin, PNG).json()
    message = attach(admin, conversation, file["id"])
    assert count_rows(loop, dsn, "file_chunk") == 1
    admin.client.ok("mutation($id: ID!) { messageDelete(id: $id) { id } }", {"id": message["id"]})
    assert download(server.url, admin, file["id"]).status_code == 404
    assert [count_rows(loop, dsn, t) for t in ("file", "file_blob", "file_chunk")] == [0, 0, 0]


def test_an_erased_user_takes_their_files_with_them(
    server: ServerThread, admin: Actor, make_user: Callable[..., Actor], loop: Loop, dsn: str
) -> None:
    member = make_user(admin)
    conversation = create_conversation(admin, "theirs")
    join(admin, member, conversation)
    attached = upload(server.url, member, PNG).json()
    attach(member, conversation, attached["id"])
    upload(server.url, member, b"an unattached note")
    kept = upload(server.url, admin, b"the admin's own file").json()
    admin.client.ok("mutation($u: ID!) { userErase(userId: $u) { userId } }", {"u": member.user_id})
    assert download(server.url, admin, attached["id"]).status_code == 404
    assert count_rows(loop, dsn, "file") == 1 and count_rows(loop, dsn, "file_blob") == 1
    assert download(server.url, admin, kept["id"]).content == b"the admin's own file"


# -- limits ----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small(dsn: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    srv = ServerThread(
        harness.test_settings(
            dsn,
            migrate_on_start=False,
            file_max_bytes=100_000,
            file_tenant_quota_bytes=250_000,
            file_storage="directory",
            file_directory=tmp_path_factory.mktemp("files"),
        )
    )
    srv.start()
    yield srv
    srv.stop()


def test_an_upload_declared_too_large_is_413_before_its_body_is_sent(
    small: ServerThread, admin: Actor
) -> None:
    head = (
        "POST /files HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {admin.api_key}\r\n"
        "Content-Type: multipart/form-data; boundary=xyz\r\n"
        f"Content-Length: {50 * 1024 * 1024}\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", small.port), timeout=30) as conn:
        conn.sendall(head.encode() + b"--xyz\r\n")  # and not one byte more of the 50 MiB announced
        answer = conn.recv(65536).decode()
    assert answer.startswith("HTTP/1.1 413"), answer
    assert '"limitName":"fileBytes"' in answer and '"limit":100000' in answer


def test_an_upload_streamed_past_the_limit_is_413(small: ServerThread, admin: Actor) -> None:
    def body() -> Iterator[bytes]:  # chunked: no Content-Length to refuse it by
        yield b'--xyz\r\nContent-Disposition: form-data; name="file"; filename="big.bin"\r\n\r\n'
        for _ in range(40):
            yield b"\0" * 10_000
        yield b"\r\n--xyz--\r\n"

    answer = httpx.post(
        f"{small.url}/files",
        content=body(),
        headers={
            "Authorization": f"Bearer {admin.api_key}",
            "Content-Type": "multipart/form-data; boundary=xyz",
        },
    )
    assert answer.status_code == 413
    assert answer.json()["errors"][0]["extensions"] == {
        "code": "BAD_USER_INPUT", "limitName": "fileBytes", "limit": 100_000
    }  # fmt: skip


def test_the_tenant_quota_counts_each_distinct_file_once(small: ServerThread, admin: Actor) -> None:
    first = bytes([1]) * 90_000
    assert upload(small.url, admin, first, "one.bin").status_code == 201
    assert upload(small.url, admin, bytes([2]) * 90_000, "two.bin").status_code == 201
    assert upload(small.url, admin, first, "again.bin").json()["deduplicated"] is True  # no new bytes
    refused = upload(small.url, admin, bytes([3]) * 90_000, "three.bin")
    assert refused.status_code == 413
    assert refused.json()["errors"][0]["extensions"]["limitName"] == "fileQuotaBytes"


def test_directory_storage_keeps_the_bytes_on_disk_and_removes_them_with_the_message(
    small: ServerThread, admin: Actor
) -> None:
    conversation = create_conversation(admin, "on disk")
    data = b"%PDF-1.7 a tiny document"
    file = upload(small.url, admin, data, "doc.pdf").json()
    assert file["contentType"] == "application/pdf"
    directory = small.app.state.services.settings.file_directory
    assert isinstance(directory, Path)
    stored = [p for p in directory.rglob(file["sha256"])]
    assert len(stored) == 1 and stored[0].read_bytes() == data
    assert download(small.url, admin, file["id"]).content == data
    message = attach(admin, conversation, file["id"], "doc.pdf")
    admin.client.ok("mutation($id: ID!) { messageDelete(id: $id) { id } }", {"id": message["id"]})
    deadline = time.monotonic() + 30
    while stored[0].exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not stored[0].exists()


# -- export and import ---------------------------------------------------------------------------------------------

PARTS_OF = """query { conversations(first: 10) { nodes { id title messages(first: 20) { nodes { content parts {
  __typename ... on ImagePart { url fileId } ... on FilePart { name fileId } } } } } } }"""


def cli(dsn: str, *args: str) -> dict[str, Any]:
    environment = {**os.environ, "DATABASE_URL": dsn, "PYTHONUNBUFFERED": "1"}
    environment.pop("THREADLINE_API_KEY", None)
    done = subprocess.run(
        [sys.executable, "-m", "threadline.cli", *args],
        capture_output=True,
        text=True,
        env=environment,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    report: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return report


def file_ids(actor: Actor) -> list[str]:
    nodes = actor.client.ok(PARTS_OF)["conversations"]["nodes"]
    return [
        part["fileId"]
        for conversation in nodes
        for message in conversation["messages"]["nodes"]
        for part in message["parts"] or []
        if part.get("fileId")
    ]


def test_a_conversation_with_files_exports_as_a_zip_and_imports_into_another_tenant(
    server: ServerThread, admin: Actor, make_tenant: Callable[..., Actor], dsn: str, tmp_path: Path
) -> None:
    notes = b"meeting notes\n"
    image = upload(server.url, admin, PNG, "chart.png").json()
    text = upload(server.url, admin, notes, "notes.txt").json()
    conversation = create_conversation(admin, "quarterly review")
    message = {
        "content": "the chart and the notes",
        "parts": [
            {"text": "the chart and the notes"},
            {"image": {"fileId": image["id"]}},
            {"file": {"name": "notes.txt", "fileId": text["id"]}},
        ],
    }
    admin.client.ok(START, {"c": conversation, "i": message})

    # The JSON export lists the files; the zip carries them.
    document = admin.client.ok("query($id: ID!) { conversationExport(id: $id) }", {"id": conversation})
    entries = document["conversationExport"]["messages"][0]["attachments"]
    assert [(e["type"], e["fileId"], e["sha256"], e["path"]) for e in entries] == [
        ("stored_file", image["id"], image["sha256"], f"files/{image['sha256']}"),
        ("stored_file", text["id"], text["sha256"], f"files/{text['sha256']}"),
    ]
    target = tmp_path / "review.zip"
    exported = cli(
        dsn, "export", "--conversation", conversation, "--out", str(target), "--api-key", admin.api_key
    )
    assert exported["files"] == 2
    with zipfile.ZipFile(target) as archive:
        assert sorted(archive.namelist()) == sorted(
            ["conversations.json", f"files/{image['sha256']}", f"files/{text['sha256']}"]
        )
        assert archive.read(f"files/{image['sha256']}") == PNG

    other = make_tenant()
    imported = cli(dsn, "import", str(target), "--format", "threadline", "--api-key", other.api_key)
    assert imported["imported"] == 1 and imported["files"] == 2 and imported["filesSkipped"] == []
    new_ids = file_ids(other)
    assert len(new_ids) == 2 and not set(new_ids) & {image["id"], text["id"]}
    assert [download(server.url, other, i).content for i in new_ids] == [PNG, notes]
    assert download(server.url, other, image["id"]).status_code == 404  # the other tenant's file stays theirs
    # Exported again, the files appear once each (held by the message, not also kept as import entries).
    again = other.client.ok(PARTS_OF)["conversations"]["nodes"][0]["id"]
    reexported = other.client.ok("query($id: ID!) { conversationExport(id: $id) }", {"id": again})
    assert [e["type"] for e in reexported["conversationExport"]["messages"][0]["attachments"]] == [
        "stored_file",
        "stored_file",
    ]


def test_a_chatgpt_export_zip_brings_its_uploaded_images_along(
    server: ServerThread, admin: Actor, dsn: str, tmp_path: Path
) -> None:
    def message(node: str, role: str, content: dict[str, Any], at: float) -> dict[str, Any]:
        return {
            "id": node,
            "author": {"role": role, "metadata": {}},
            "create_time": at,
            "content": content,
            "status": "finished_successfully",
            "metadata": {},
            "recipient": "all",
        }

    picture = {
        "content_type": "multimodal_text",
        "parts": [
            {
                "content_type": "image_asset_pointer",
                "asset_pointer": "file-service://file-Cat42",
                "size_bytes": 1,
            },
            "what is this?",
        ],
    }
    export = [
        {
            "title": "a cat",
            "create_time": 1733000000.0,
            "update_time": 1733000100.0,
            "conversation_id": "gpt-cat",
            "id": "gpt-cat",
            "current_node": "a1",
            "mapping": {
                "root": {"id": "root", "parent": None, "children": ["q1"], "message": None},
                "q1": {
                    "id": "q1",
                    "parent": "root",
                    "children": ["a1"],
                    "message": message("q1", "user", picture, 1733000001.0),
                },
                "a1": {
                    "id": "a1",
                    "parent": "q1",
                    "children": [],
                    "message": message(
                        "a1", "assistant", {"content_type": "text", "parts": ["A cat."]}, 1733000002.0
                    ),
                },
            },
        }
    ]
    target = tmp_path / "chatgpt.zip"
    with zipfile.ZipFile(target, "w") as archive:
        archive.writestr("conversations.json", json.dumps(export))
        archive.writestr("file-Cat42-cat.png", PNG)
        archive.writestr("file-Unused-other.png", b"not referenced")
    report = cli(dsn, "import", str(target), "--format", "chatgpt", "--api-key", admin.api_key)
    assert report["imported"] == 1 and report["files"] == 1
    (file_id,) = file_ids(admin)
    got = download(server.url, admin, file_id)
    assert got.content == PNG and got.headers["content-type"] == "image/png"
    assert "cat.png" in got.headers["content-disposition"]


def test_a_claude_export_zip_brings_the_files_it_carries_by_name(
    server: ServerThread, admin: Actor, dsn: str, tmp_path: Path
) -> None:
    export = [
        {
            "uuid": "claude-with-file",
            "name": "a plan",
            "created_at": "2025-03-01T10:00:00.000000Z",
            "updated_at": "2025-03-01T10:30:00.000000Z",
            "chat_messages": [
                {
                    "uuid": "h1",
                    "sender": "human",
                    "text": "read this",
                    "content": [{"type": "text", "text": "read this"}],
                    "created_at": "2025-03-01T10:00:00.000000Z",
                    "attachments": [],
                    "files": [{"file_name": "plan.pdf"}, {"file_name": "missing.png"}],
                    "parent_message_uuid": "00000000-0000-4000-8000-000000000000",
                }
            ],
        }
    ]
    target = tmp_path / "claude.zip"
    with zipfile.ZipFile(target, "w") as archive:
        archive.writestr("conversations.json", json.dumps(export))
        archive.writestr("files/plan.pdf", b"%PDF-1.4 plan")
    report = cli(dsn, "import", str(target), "--format", "claude", "--api-key", admin.api_key)
    assert report["imported"] == 1 and report["files"] == 1
    (file_id,) = file_ids(admin)  # missing.png stays a file reference without bytes
    assert download(server.url, admin, file_id).content == b"%PDF-1.4 plan"


# -- an S3-compatible store --------------------------------------------------------------------------------------


def test_requests_are_signed_as_aws_signature_version_4_documents() -> None:
    # AWS's own example (S3 API reference, "Example: GET Object"): the signature is theirs, not ours.
    from datetime import UTC, datetime

    from threadline.files.s3 import EMPTY_SHA256, sign

    headers = sign(
        "GET",
        "https://examplebucket.s3.amazonaws.com/test.txt",
        {"Range": "bytes=0-9"},
        EMPTY_SHA256,
        access_key="AKIAIOSFODNN7EXAMPLE",
        secret_key="wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        region="us-east-1",
        now=datetime(2013, 5, 24, tzinfo=UTC),
    )
    assert headers["Authorization"] == (
        "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, "
        "SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, "
        "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
    )


class FakeS3:
    """A bucket in memory behind a real HTTP server, refusing any request whose signature does not verify."""

    def __init__(self) -> None:
        import threading

        import uvicorn
        from starlette.applications import Starlette
        from starlette.requests import Request
        from starlette.responses import Response
        from starlette.routing import Route

        self.objects: dict[str, bytes] = {}
        self.refused = 0

        async def handle(request: Request) -> Response:
            from datetime import UTC, datetime

            from threadline.files.s3 import sign

            body = await request.body()
            given = request.headers.get("authorization", "")
            when = datetime.strptime(request.headers["x-amz-date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
            signed_names = given.split("SignedHeaders=")[1].split(",")[0].split(";")
            extra = {
                n: request.headers[n]
                for n in signed_names
                if n not in ("host", "x-amz-date", "x-amz-content-sha256")
            }
            expected = sign(
                request.method, str(request.url), extra, request.headers["x-amz-content-sha256"],
                access_key="test-key", secret_key="test-secret", region="eu-central-1", now=when,
            )["Authorization"]  # fmt: skip
            payload_ok = (
                request.method != "PUT"
                or hashlib.sha256(body).hexdigest() == request.headers["x-amz-content-sha256"]
            )
            if given != expected or not payload_ok:
                self.refused += 1
                return Response("SignatureDoesNotMatch", 403)
            key = request.path_params["key"]
            if request.method == "PUT":
                self.objects[key] = body
                return Response(status_code=200)
            if request.method == "DELETE":
                self.objects.pop(key, None)
                return Response(status_code=204)
            if key not in self.objects:
                return Response("NoSuchKey", 404)
            return Response(self.objects[key])

        app = Starlette(routes=[Route("/bucket/{key:path}", handle, methods=["GET", "PUT", "DELETE"])])
        self.port = harness.free_port()
        self.server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        while not self.server.started:
            time.sleep(0.02)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)


@pytest.fixture(scope="module")
def bucket(dsn: str) -> Iterator[tuple[ServerThread, FakeS3]]:
    store = FakeS3()
    srv = ServerThread(
        harness.test_settings(
            dsn,
            migrate_on_start=False,
            file_storage="s3",
            file_s3_endpoint=f"http://127.0.0.1:{store.port}",
            file_s3_bucket="bucket",
            file_s3_region="eu-central-1",
            file_s3_access_key="test-key",
            file_s3_secret_key="test-secret",
            file_s3_prefix="threadline/",
        )
    )
    srv.start()
    yield srv, store
    srv.stop()
    store.stop()


def test_an_s3_compatible_store_holds_the_bytes_and_loses_them_with_the_message(
    bucket: tuple[ServerThread, FakeS3], admin: Actor, loop: Loop, dsn: str
) -> None:
    server, store = bucket
    file = upload(server.url, admin, PNG, "in-the-bucket.png").json()
    key = f"threadline/{admin.tenant_id[4:]}/{file['sha256']}"
    assert store.objects == {key: PNG} and store.refused == 0
    assert count_rows(loop, dsn, "file_chunk") == 0
    assert download(server.url, admin, file["id"]).content == PNG
    conversation = create_conversation(admin, "in a bucket")
    message = attach(admin, conversation, file["id"])
    admin.client.ok("mutation($id: ID!) { messageDelete(id: $id) { id } }", {"id": message["id"]})
    deadline = time.monotonic() + 30
    while store.objects and time.monotonic() < deadline:
        time.sleep(0.2)
    assert store.objects == {} and store.refused == 0


@pytest.fixture(scope="module")
def forgetful(dsn: str) -> Iterator[ServerThread]:
    srv = ServerThread(harness.test_settings(dsn, migrate_on_start=False, file_unattached_ttl_seconds=1))
    srv.start()
    yield srv
    srv.stop()


def test_an_upload_no_message_takes_is_deleted_after_its_time_to_live(
    forgetful: ServerThread, admin: Actor, loop: Loop, dsn: str
) -> None:
    conversation = create_conversation(admin, "kept")
    kept = upload(forgetful.url, admin, PNG, "kept.png").json()
    attach(admin, conversation, kept["id"])
    dropped = upload(forgetful.url, admin, b"never sent").json()
    deadline = time.monotonic() + 30
    while download(forgetful.url, admin, dropped["id"]).status_code == 200 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert download(forgetful.url, admin, dropped["id"]).status_code == 404
    assert download(forgetful.url, admin, kept["id"]).content == PNG
    assert count_rows(loop, dsn, "file_blob") == 1


def test_concurrent_uploads_of_the_same_bytes_store_them_once(
    server: ServerThread, admin: Actor, loop: Loop, dsn: str
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    data = b"%PDF-1.7 " + bytes(range(256)) * 400
    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(lambda n: upload(server.url, admin, data, f"copy{n}.pdf"), range(6)))
    assert [a.status_code for a in answers] == [201] * 6
    assert sorted(a.json()["deduplicated"] for a in answers) == [False, True, True, True, True, True]
    assert count_rows(loop, dsn, "file_blob") == 1 and count_rows(loop, dsn, "file") == 6
