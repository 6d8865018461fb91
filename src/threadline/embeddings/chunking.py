"""Long messages are embedded in chunks: windows of about CHUNK_CHARS characters cut at whitespace, each
overlapping the previous one a little (an eighth) so that a sentence cut by a boundary is whole in one of them.
An embedder with a smaller window (the local model: 256 tokens) asks for shorter chunks, and gets more of them;
one that counts tokens gives a `Fit` per message, and a chunk over its window is cut where its tokens end (ids,
hashes, base64 and non-Latin scripts hold far more tokens a character than prose), so no text is silently left
out of its vector."""

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


# Characters of a message that chunks may reach (CHUNKS_MAX chunks of CHUNK_CHARS): all a `Fit` needs to see.
REACH_CHARS = CHUNKS_MAX * CHUNK_CHARS
# Fit(start, end): where a chunk from `start` must end, at or before `end`, to be within the model's window
# (after `start`: every chunk advances).
Fit = Callable[[int, int], int]


def chunks(content: str, chunk_chars: int = CHUNK_CHARS, fit: Fit | None = None) -> list[Chunk]:
    overlap_chars = OVERLAP_CHARS * chunk_chars // CHUNK_CHARS
    chunks_max = CHUNKS_MAX * CHUNK_CHARS // chunk_chars  # the same length of a message is embedded
    found: list[Chunk] = []
    start, length = 0, len(content)
    while start < length and len(found) < chunks_max:
        end = min(start + chunk_chars, length)
        if end < length:
            cut = content.rfind(" ", start + chunk_chars // 2, end)
            end = cut if cut > start else end
        if fit is not None:  # within the model's window: cut where its tokens end
            end = fit(start, end)
        text = content[start:end].strip()
        if text:
            found.append(Chunk(len(found), start, end, text))
        if end >= length:
            break
        following = max(end - overlap_chars, start + 1)
        space = content.find(" ", following, end)
        start = space + 1 if space != -1 else following
    return found
