"""Long messages are embedded in chunks: windows of about CHUNK_CHARS characters cut at whitespace, each
overlapping the previous one a little so that a sentence cut by a boundary is whole in one of them."""

from __future__ import annotations

from dataclasses import dataclass

CHUNK_CHARS = 1_200
OVERLAP_CHARS = 150
# Chunks per message at most (about 40,000 characters): beyond that a message is found by its beginning.
CHUNKS_MAX = 32


@dataclass(frozen=True)
class Chunk:
    index: int
    start: int
    end: int
    text: str


def chunks(content: str) -> list[Chunk]:
    found: list[Chunk] = []
    start, length = 0, len(content)
    while start < length and len(found) < CHUNKS_MAX:
        end = min(start + CHUNK_CHARS, length)
        if end < length:
            cut = content.rfind(" ", start + CHUNK_CHARS // 2, end)
            end = cut if cut > start else end
        text = content[start:end].strip()
        if text:
            found.append(Chunk(len(found), start, end, text))
        if end >= length:
            break
        following = max(end - OVERLAP_CHARS, start + 1)
        space = content.find(" ", following, end)
        start = space + 1 if space != -1 else following
    return found
