"""Export archives zipfile refuses at a member's local header, or as a whole: refused by name before anything is
imported, whether the format is named or detected, never with a traceback."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from tests.harness import Actor, Loop
from tests.test_porting_cli import run
from tests.test_porting_import import FIXTURES, sql

CLAUDE_FILE = (FIXTURES / "claude" / "conversations.json").read_text()


def _damaged(path: Path, how: str) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("conversations.json", CLAUDE_FILE)
    data = bytearray(path.read_bytes())
    if how == "signature":
        data[3] = 5  # the local header's signature, PK\x03\x04
    else:
        data[30] = ord("k")  # the local header's name, other than the central directory's
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize(
    ("how", "why"),
    [
        ("signature", "Bad magic number for file header"),
        ("name", "File name in directory 'conversations.json'"),
    ],
)
def test_an_export_file_whose_local_header_zipfile_refuses_is_refused_by_name_before_anything_is_imported(
    admin: Actor, loop: Loop, dsn: str, tmp_path: Path, how: str, why: str
) -> None:
    archive = _damaged(tmp_path / f"attack_{how}.zip", how)
    for detect in (["--format", "claude"], []):
        result = run(dsn, "import", str(archive), *detect, "--api-key", admin.api_key, "--quiet")
        # Before the fix: with --format, a BadZipFile traceback once the import reached the file (exit 1); detected,
        # "threadline: Bad magic number for file header" without saying which file.
        assert "Traceback" not in result.stderr
        assert result.returncode == 2
        assert (
            result.stderr.strip()
            .splitlines()[-1]
            .startswith(f"threadline: {archive}:conversations.json cannot be read: {why}")
        )
    assert sql(loop, dsn, "SELECT count(*) AS n FROM conversation")[0]["n"] == 0


def test_a_zip_that_is_no_archive_is_refused_naming_it(admin: Actor, dsn: str, tmp_path: Path) -> None:
    archive = tmp_path / "attack_not.zip"
    archive.write_text(CLAUDE_FILE)
    result = run(dsn, "import", str(archive), "--api-key", admin.api_key, "--quiet")
    assert (result.returncode, result.stderr.strip().splitlines()[-1]) == (
        2,
        f"threadline: {archive}: File is not a zip file",
    )
