"""Long messages are embedded in chunks: windows of about CHUNK_CHARS characters cut at whitespace, each
overlapping the previous one a little (an eighth) so that a sentence cut by a boundary is whole in one of them.
An embedder with a smaller window (the local model: 256 tokens) asks for shorter chunks, and gets more of them;
one that counts tokens (`fits`) has a chunk over its window cut shorter until it fits (ids, hashes, base64 and
non-Latin scripts hold far more tokens a character than prose), so no text is silently left out of its vector."""

from __future__ import annotations

from collections.abc import Callable
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


MIN_CHUNK_CHARS = 16  # a chunk is not cut shorter than this to fit (a window this short holds it in practice)


def chunks(
    content: str, chunk_chars: int = CHUNK_CHARS, fits: Callable[[str], bool] | None = None
) -> list[Chunk]:
    overlap_chars = OVERLAP_CHARS * chunk_chars // CHUNK_CHARS
    chunks_max = CHUNKS_MAX * CHUNK_CHARS // chunk_chars  # the same length of a message is embedded
    found: list[Chunk] = []
    start, length = 0, len(content)
    while start < length and len(found) < chunks_max:
        end = min(start + chunk_chars, length)
        if end < length:
            cut = content.rfind(" ", start + chunk_chars // 2, end)
            end = cut if cut > start else end
        text = content[start:end].strip()
        while fits is not None and text and not fits(text) and end - start > MIN_CHUNK_CHARS:
            span = max((end - start) * 3 // 4, MIN_CHUNK_CHARS)  # shorter, at a space in its last half if any
            cut = content.rfind(" ", start + span // 2, start + span)
            end = cut if cut > start else start + span
            text = content[start:end].strip()
        if text:
            found.append(Chunk(len(found), start, end, text))
        if end >= length:
            break
        following = max(end - overlap_chars, start + 1)
        space = content.find(" ", following, end)
        start = space + 1 if space != -1 else following
    return found
