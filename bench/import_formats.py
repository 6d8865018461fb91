"""Reading cost of the LibreChat and Open WebUI importers against the ChatGPT one, and the cost of detecting a
file's format against reading the file (issue 22 item 9).

    .venv/bin/python bench/import_formats.py                       # 300 conversations x 200 messages, 64 MB file
    .venv/bin/python bench/import_formats.py --conversations 50    # scaled down

Readers: the same conversations (a chain with a regenerated answer every 10 messages) written in each
format's shape, each read (`porting.service.read`) and planned (`porting.importer.plan`: the tree, paths,
checks) in this process, no database: messages per second, and the ratio to ChatGPT's reader on the same
conversations measured in the same run. Detection: `porting.detect.detect_stream` on a ChatGPT export file
against reading the whole file (the baseline), and the bytes it read.
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from threadline.porting import detect, importer, service  # noqa: E402
from threadline.porting.model import ImportFormat  # noqa: E402
from threadline.settings import Settings  # noqa: E402

T0 = datetime(2025, 1, 1, tzinfo=UTC)


def tree(index: int, messages: int) -> list[tuple[str, str | None, str, str, float]]:
    """(id, parent, role, text, unix time): a chain, with a second answer to every 10th question."""
    out: list[tuple[str, str | None, str, str, float]] = []
    parent: str | None = None
    for n in range(messages):
        role = "user" if n % 2 == 0 else "assistant"
        key = f"c{index}-m{n}"
        out.append(
            (key, parent, role, f"message {n} of conversation {index}: " + "lorem ipsum " * 20, n * 10.0)
        )
        if role == "assistant" and n % 10 == 1:
            out.append((key + "b", parent, role, f"another answer {n}", n * 10.0 + 5))
        parent = key
    return out


def chatgpt(index: int, nodes: list[tuple[str, str | None, str, str, float]]) -> dict[str, Any]:
    mapping: dict[str, Any] = {"root": {"id": "root", "message": None, "parent": None, "children": []}}
    for key, parent, role, text, t in nodes:
        mapping[key] = {
            "id": key,
            "parent": parent or "root",
            "children": [],
            "message": {
                "id": key,
                "author": {"role": role},
                "create_time": 1.7e9 + t,
                "content": {"content_type": "text", "parts": [text]},
                "metadata": {"model_slug": "gpt-4o"} if role == "assistant" else {},
            },
        }
        mapping[parent or "root"]["children"].append(key)
    return {"id": f"gpt-{index}", "title": f"c{index}", "create_time": 1.7e9, "mapping": mapping}


def librechat(index: int, nodes: list[tuple[str, str | None, str, str, float]]) -> dict[str, Any]:
    messages = [
        {
            "messageId": key,
            "parentMessageId": parent or "00000000-0000-0000-0000-000000000000",
            "isCreatedByUser": role == "user",
            "sender": "User" if role == "user" else "GPT-4o",
            "text": text,
            "model": None if role == "user" else "gpt-4o",
            "createdAt": (T0 + timedelta(seconds=t)).isoformat().replace("+00:00", "Z"),
        }
        for key, parent, role, text, t in nodes
    ]
    return {"conversationId": f"lc-{index}", "title": f"c{index}", "recursive": False, "messages": messages}


def openwebui(index: int, nodes: list[tuple[str, str | None, str, str, float]]) -> dict[str, Any]:
    messages: dict[str, Any] = {}
    for key, parent, role, text, t in nodes:
        messages[key] = {
            "id": key,
            "parentId": parent,
            "childrenIds": [],
            "role": role,
            "content": text,
            "timestamp": int(1.7e9 + t),
            **({"model": "llama3.1"} if role == "assistant" else {}),
        }
        if parent:
            messages[parent]["childrenIds"].append(key)
    last = nodes[-1][0]
    return {
        "id": f"ow-{index}",
        "title": f"c{index}",
        "chat": {"models": ["llama3.1"], "history": {"messages": messages, "currentId": last}},
        "created_at": 1_700_000_000,
    }


def read_rate(fmt: ImportFormat, values: list[Any], settings: Settings) -> tuple[float, int]:
    start = time.perf_counter()
    messages = 0
    for value in values:
        for conversation in service.read(fmt, value):
            messages += len(importer.plan(conversation, settings).messages)
    return messages / (time.perf_counter() - start), messages


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--conversations", type=int, default=300)
    parser.add_argument(
        "--messages", type=int, default=200, help="messages per conversation (before branches)"
    )
    parser.add_argument("--file-mb", type=int, default=64, help="size of the file detection is measured on")
    args = parser.parse_args()
    settings = Settings.from_env()
    trees = [tree(i, args.messages) for i in range(args.conversations)]
    shapes = {
        ImportFormat.CHATGPT: [chatgpt(i, t) for i, t in enumerate(trees)],
        ImportFormat.LIBRECHAT: [librechat(i, t) for i, t in enumerate(trees)],
        ImportFormat.OPENWEBUI: [openwebui(i, t) for i, t in enumerate(trees)],
    }
    # Decoded as an import decodes them (orjson round trip: no shared objects between formats).
    decoded = {fmt: [orjson.loads(orjson.dumps(v)) for v in values] for fmt, values in shapes.items()}
    read_rate(ImportFormat.CHATGPT, decoded[ImportFormat.CHATGPT][:5], settings)  # warm up
    rates = {fmt: read_rate(fmt, values, settings) for fmt, values in decoded.items()}
    baseline, count = rates[ImportFormat.CHATGPT]
    print(f"read + plan, {args.conversations} conversations, {count:,} messages each format:")
    for fmt, (rate, n) in rates.items():
        assert n == count, (fmt, n, count)
        print(f"  {fmt.value:<10} {rate:>10,.0f} messages/s   ratio to chatgpt {baseline / rate:5.2f}x time")

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "conversations.json"
        one = orjson.dumps(shapes[ImportFormat.CHATGPT][0])
        with path.open("wb") as f:
            f.write(b"[")
            written = 0
            while written < args.file_mb * 1024 * 1024:
                f.write(one if written == 0 else b"," + one)
                written += len(one) + 1
            f.write(b"]")
        size = path.stat().st_size
        start = time.perf_counter()
        with path.open("rb") as f:
            while f.read(1 << 20):
                pass
        whole = time.perf_counter() - start
        start = time.perf_counter()
        with path.open("rb") as f:
            counted = _Counting(f)
            found = detect.detect_stream(counted)
        detected = time.perf_counter() - start
    print(
        f"detect on a {size / 1e6:,.0f} MB file: {found.value}, read {counted.read_bytes:,} bytes in "
        f"{detected * 1e3:.2f} ms; reading the whole file {whole * 1e3:,.0f} ms; detect / read = "
        f"{detected / whole:.4f}"
    )


class _Counting(io.RawIOBase):
    def __init__(self, inner: Any) -> None:
        self.inner, self.read_bytes = inner, 0

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        data: bytes = self.inner.read(n)
        self.read_bytes += len(data)
        return data


if __name__ == "__main__":
    main()
