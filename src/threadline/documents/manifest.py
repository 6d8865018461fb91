"""Clients' persisted-document manifests: what `threadline documents register` reads."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

APOLLO_FORMAT = "apollo-persisted-query-manifest"


class ManifestError(ValueError):
    pass


@dataclass(frozen=True)
class ManifestEntry:
    id: str
    body: str
    name: str | None = None


def read_manifest(path: Path) -> list[ManifestEntry]:
    """The operations of Apollo's persisted-query manifest (`{"format": "apollo-persisted-query-manifest",
    "version": 1, "operations": [{"id", "name", "type", "body"}]}`, from generate-persisted-query-manifest),
    or of a plain `{id: body}` map (GraphQL Code Generator's persisted documents, Relay's
    persisted-queries.json)."""
    try:
        data: Any = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ManifestError(f"{path}: cannot read the manifest ({exc})") from exc
    if not isinstance(data, dict):
        raise ManifestError(f"{path}: a manifest is a JSON object")
    if "format" in data or "operations" in data:
        if data.get("format") != APOLLO_FORMAT or data.get("version") != 1:
            raise ManifestError(f'{path}: only "format": "{APOLLO_FORMAT}", "version": 1 is supported')
        operations = data.get("operations")
        if not isinstance(operations, list):
            raise ManifestError(f"{path}: `operations` must be a list")
        entries = []
        for position, op in enumerate(operations):
            if not (
                isinstance(op, dict) and isinstance(op.get("id"), str) and isinstance(op.get("body"), str)
            ):
                raise ManifestError(f"{path}: operations[{position}] needs a string `id` and `body`")
            name = op.get("name")
            entries.append(ManifestEntry(op["id"], op["body"], name if isinstance(name, str) else None))
        return entries
    entries = []
    for key, body in data.items():
        if not isinstance(body, str):
            raise ManifestError(f"{path}: the value of {key!r} must be the document's text")
        entries.append(ManifestEntry(key, body))
    return entries
