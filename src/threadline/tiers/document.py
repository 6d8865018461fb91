"""The cold document's bytes: a JSON header line, then each table's rows as one JSON array.

    {"format": "threadline-cold/2", "tables": [{"name": "message", "columns": [...], "rows": 3, "bytes": 812}, ...]}
    [{"id": ..., ...}, ...][...]...

The header says where each table's array starts, so a restore hands each array to PostgreSQL as it is
(`jsonb_populate_recordset`) without parsing it in Python; the whole is compressed as one stream.
"""

from __future__ import annotations

import lzma
import zlib
from dataclasses import dataclass
from typing import Any

import orjson

FORMAT = "threadline-cold/2"
CODEC = "zlib"
LEVEL = 6
DEEP_CODEC = "lzma"  # deep storage: slower, smaller


@dataclass(frozen=True)
class TableRows:
    name: str
    columns: list[str]
    rows: int
    json: bytes  # a JSON array of row objects


def encode(tables: list[TableRows], codec: str = CODEC) -> bytes:
    header = {
        "format": FORMAT,
        "tables": [
            {"name": t.name, "columns": t.columns, "rows": t.rows, "bytes": len(t.json)} for t in tables
        ],
    }
    return compress(orjson.dumps(header) + b"\n" + b"".join(t.json for t in tables), codec)


def decode(data: bytes, codec: str) -> list[TableRows]:
    raw = decompress(data, codec)
    line, _, body = raw.partition(b"\n")
    header = orjson.loads(line)
    if header.get("format") != FORMAT:
        raise ValueError(f"a cold document of unknown format {header.get('format')!r}")
    out = []
    at = 0
    for entry in header["tables"]:
        out.append(TableRows(entry["name"], entry["columns"], entry["rows"], body[at : at + entry["bytes"]]))
        at += entry["bytes"]
    if at != len(body):
        raise ValueError("a cold document's tables do not add up to its length")
    return out


def as_json(data: bytes, codec: str) -> dict[str, Any]:
    """The document as one JSON value, {"format", "tables": {name: [rows]}} (tests, operators)."""
    return {"format": FORMAT, "tables": {t.name: orjson.loads(t.json) for t in decode(data, codec)}}


def recompress(data: bytes, codec: str, into: str) -> bytes:
    return compress(decompress(data, codec), into)


def compress(data: bytes, codec: str = CODEC) -> bytes:
    if codec == "zlib":
        return zlib.compress(data, LEVEL)
    if codec == "lzma":
        return lzma.compress(data, preset=9)
    raise ValueError(f"unknown codec {codec}")


def decompress(data: bytes, codec: str) -> bytes:
    if codec == "zlib":
        return zlib.decompress(data)
    if codec == "lzma":
        return lzma.decompress(data)
    raise ValueError(f"unknown codec {codec}")
